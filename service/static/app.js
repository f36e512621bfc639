// gwm web page: posts the chosen file and shows the foreground over it.
// Images go to /segment?format=overlay; videos to /adapt-and-segment, then the
// job is polled and its JSON RLE masks are painted over the local video's frames.
"use strict";

const $ = (id) => document.getElementById(id);
const statusLine = $("status");

function headers() {
  const key = $("apikey").value;
  return key ? { "X-API-Key": key } : {};
}

function say(text, isError = false) {
  statusLine.textContent = text;
  statusLine.className = isError ? "error" : "";
}

async function failure(response) {
  try {
    const body = await response.json();
    return body.error ? body.error.message : response.statusText;
  } catch {
    return response.statusText;
  }
}

function isVideo(file) {
  return file.type.startsWith("video/") || file.type === "image/gif" || /\.(mkv|avi)$/i.test(file.name);
}

async function segmentImage(file) {
  const form = new FormData();
  form.append("file", file);
  const response = await fetch("/segment?format=overlay", { method: "POST", body: form, headers: headers() });
  if (!response.ok) throw new Error(await failure(response));
  const overlay = $("overlay");
  overlay.src = URL.createObjectURL(await response.blob());
  overlay.hidden = false;
  say("Done: the tinted region is the foreground.");
}

async function adaptVideo(file) {
  const form = new FormData();
  form.append("file", file);
  const query = new URLSearchParams({ steps: $("steps").value, stride: $("stride").value, format: "json" });
  const response = await fetch(`/adapt-and-segment?${query}`, { method: "POST", body: form, headers: headers() });
  if (!response.ok) throw new Error(await failure(response));
  const job = await response.json();
  const finished = await poll(job.url);
  const result = await fetch(`${job.url}/result?format=json`, { headers: headers() });
  if (!result.ok) throw new Error(await failure(result));
  await showVideo(file, await result.json(), finished);
}

async function poll(url) {
  const bar = $("progress");
  bar.hidden = false;
  for (;;) {
    const response = await fetch(url, { headers: headers() });
    if (!response.ok) throw new Error(await failure(response));
    const job = await response.json();
    const { stage, current, total } = job.progress;
    bar.value = total ? current / total : 0;
    say(`Job ${job.state}: ${stage}${total ? ` ${current}/${total}` : ""}`);
    if (job.state === "succeeded") return job;
    if (job.state === "failed" || job.state === "cancelled") throw new Error(job.error || `job ${job.state}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

// Decode a COCO compressed RLE string (pycocotools' format) into a column-major 0/1 array.
function decodeRle(rle) {
  const [height, width] = rle.size;
  const text = rle.counts;
  const runs = [];
  for (let p = 0; p < text.length; ) {
    let x = 0, shift = 0, more = true, c = 0;
    while (more) {
      c = text.charCodeAt(p++) - 48;
      x |= (c & 0x1f) << shift;
      more = (c & 0x20) !== 0;
      shift += 5;
      if (!more && (c & 0x10)) x |= -1 << shift;
    }
    if (runs.length > 2) x += runs[runs.length - 2];
    runs.push(x);
  }
  const mask = new Uint8Array(height * width);
  let offset = 0;
  runs.forEach((run, i) => {
    if (i % 2) mask.fill(1, offset, offset + run);
    offset += run;
  });
  return { mask, height, width };
}

async function showVideo(file, result, job) {
  const video = $("source");
  const canvas = $("canvas");
  const slider = $("frame");
  video.src = URL.createObjectURL(file);
  await new Promise((resolve) => video.addEventListener("loadeddata", resolve, { once: true }));
  canvas.width = result.width;
  canvas.height = result.height;
  slider.max = String(result.frames - 1);
  $("video-result").hidden = false;
  const context = canvas.getContext("2d");

  async function draw(index) {
    video.currentTime = (index + 0.5) / result.fps;
    await new Promise((resolve) => video.addEventListener("seeked", resolve, { once: true }));
    context.drawImage(video, 0, 0, result.width, result.height);
    const pixels = context.getImageData(0, 0, result.width, result.height);
    const { mask, height, width } = decodeRle(result.masks[index]);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const i = 4 * (y * width + x);
        const fg = mask[x * height + y];
        for (const [channel, tint] of [[0, 255], [1, 40], [2, 90]]) {
          pixels.data[i + channel] = fg ? (pixels.data[i + channel] + tint) / 2 : pixels.data[i + channel] * 0.55;
        }
      }
    }
    context.putImageData(pixels, 0, 0);
  }

  slider.oninput = () => draw(Number(slider.value));
  await draw(0);
  const seconds = Object.entries(job.timings).map(([stage, s]) => `${stage} ${s.toFixed(1)} s`).join(", ");
  say(`Done: ${result.frames} frames (${seconds}). Move the slider to browse frames.`);
}

$("upload").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  $("submit").disabled = true;
  $("overlay").hidden = true;
  $("video-result").hidden = true;
  $("progress").hidden = true;
  say(isVideo(file) ? "Uploading video…" : "Segmenting…");
  try {
    await (isVideo(file) ? adaptVideo(file) : segmentImage(file));
  } catch (error) {
    say(`Error: ${error.message}`, true);
  } finally {
    $("submit").disabled = false;
  }
});
