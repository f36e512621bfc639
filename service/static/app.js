// gwm web page, plain JavaScript with no dependencies.
// An image goes to POST /segment and comes back as a mask PNG, shown beside the original and an
// overlay drawn here. A video goes to POST /adapt-and-segment; the job is polled (one progress bar
// over all its stages, an ETA, a cancel button) and its JSON masks are then played over the local
// file's frames, each mask over the very source frame it was computed from, whatever the stride.
// The page sets <body data-state> (idle, chosen, running, image-done, video-done, cancelled, error).
"use strict";

const $ = (id) => document.getElementById(id);

// The server's overlay colour (service/encoding.py): foreground tinted half-way to it, the rest dimmed.
const TINT = [255, 40, 90];
const DIM = 0.55;

const STAGE_LABELS = {
  queued: "Waiting for a worker", decoding: "Decoding frames", flow: "Computing optical flow",
  adapting: "Adapting the network to this video", segmenting: "Segmenting frames", encoding: "Encoding masks",
};
const POLL_MS = 400;

let chosen = null; // { file, kind: "image" | "video" }
let job = null; // the running video job: { xhr, url, cancelled }
let player = null;
const objectUrls = [];

// ---------------------------------------------------------------- small helpers

function setState(state) {
  document.body.dataset.state = state;
}

function say(text) {
  $("status").textContent = text;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function objectUrl(blob) {
  const url = URL.createObjectURL(blob);
  objectUrls.push(url);
  return url;
}

function stem(name) {
  return name.replace(/\.[^.]+$/, "") || "gwm";
}

function formatBytes(bytes) {
  const units = ["B", "kB", "MB", "GB"];
  let i = 0;
  for (; bytes >= 1000 && i < units.length - 1; i++) bytes /= 1000;
  return `${bytes.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function formatSeconds(seconds) {
  return seconds < 90 ? `${Math.max(1, Math.round(seconds))} s` : `${Math.round(seconds / 60)} min`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const once = (target, event) => new Promise((resolve) => target.addEventListener(event, resolve, { once: true }));

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

class Cancelled extends Error {}

// ---------------------------------------------------------------- API access

function apiKey() {
  return $("apikey").value.trim();
}

function keyHeaders() {
  return apiKey() ? { "X-API-Key": apiKey() } : {};
}

// The message of the service's error body {"error": {"status", "code", "message"}}.
function errorMessage(status, body, fallback) {
  return (body && body.error && body.error.message) || fallback || `HTTP ${status}`;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...keyHeaders(), ...(options.headers || {}) } });
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new ApiError(response.status, errorMessage(response.status, body, response.statusText));
  }
  return response;
}

// ---------------------------------------------------------------- choosing a file

// Count a GIF's frames (stopping at 2) by walking its blocks: a still GIF is an image for /segment,
// an animated one a video.
async function gifFrameCount(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const colourTable = (packed) => (packed & 0x80 ? 3 * 2 ** ((packed & 7) + 1) : 0);
  let p = 13 + colourTable(bytes[10]);
  let frames = 0;
  const skipSubBlocks = () => {
    while (p < bytes.length && bytes[p] !== 0) p += bytes[p] + 1;
    p += 1;
  };
  while (p < bytes.length && frames < 2) {
    if (bytes[p] === 0x21) { // extension: label, then sub-blocks
      p += 2;
      skipSubBlocks();
    } else if (bytes[p] === 0x2c) { // image: descriptor, local colour table, LZW code size, data
      frames += 1;
      p += 10 + colourTable(bytes[p + 9]) + 1;
      skipSubBlocks();
    } else {
      break; // trailer, or damage: the server will say
    }
  }
  return frames;
}

async function kindOf(file) {
  if (file.type === "image/gif" || /\.gif$/i.test(file.name)) return (await gifFrameCount(file)) > 1 ? "video" : "image";
  if (file.type.startsWith("video/") || /\.(mp4|m4v|mov|webm|mkv|avi)$/i.test(file.name)) return "video";
  return "image"; // anything else goes to /segment, which names what it cannot read
}

function clearResults() {
  player?.stop();
  player = null;
  objectUrls.splice(0).forEach((url) => URL.revokeObjectURL(url));
  for (const id of ["image-result", "video-result", "progress-box", "error"]) $(id).hidden = true;
  say("");
}

async function choose(file) {
  if (!file || job) return;
  clearResults();
  chosen = { file, kind: await kindOf(file) };
  $("chosen-kind").textContent = chosen.kind;
  $("chosen-name").textContent = file.name;
  $("chosen-size").textContent = formatBytes(file.size);
  $("chosen").hidden = false;
  $("video-options").hidden = chosen.kind !== "video";
  $("submit").disabled = false;
  $("submit").textContent = chosen.kind === "video" ? "Segment video" : "Segment image";
  setState("chosen");
}

// ---------------------------------------------------------------- drawing masks

// Decode a COCO compressed RLE (pycocotools' string format) into a row-major 0/1 array.
function decodeRle(rle) {
  const [height, width] = rle.size;
  const text = rle.counts;
  const runs = [];
  for (let p = 0; p < text.length;) {
    let x = 0;
    let shift = 0;
    let more = true;
    while (more) {
      const c = text.charCodeAt(p++) - 48;
      x |= (c & 0x1f) << shift;
      more = (c & 0x20) !== 0;
      shift += 5;
      if (!more && c & 0x10) x |= -1 << shift;
    }
    if (runs.length > 2) x += runs[runs.length - 2];
    runs.push(x);
  }
  const columnMajor = new Uint8Array(height * width);
  let offset = 0;
  runs.forEach((run, i) => {
    if (i % 2) columnMajor.fill(1, offset, offset + run);
    offset += run;
  });
  const mask = new Uint8Array(height * width);
  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) mask[y * width + x] = columnMajor[x * height + y];
  }
  return mask;
}

// Tint the foreground of what is drawn on ``context``, dim the rest, and trace the mask's edge.
function drawOverlay(context, mask, width, height) {
  const pixels = context.getImageData(0, 0, width, height);
  const data = pixels.data;
  for (let i = 0; i < width * height; i++) {
    const o = 4 * i;
    if (mask[i]) {
      const x = i % width;
      const edge = (x > 0 && !mask[i - 1]) || (x < width - 1 && !mask[i + 1])
        || (i >= width && !mask[i - width]) || (i < width * (height - 1) && !mask[i + width]);
      for (let c = 0; c < 3; c++) data[o + c] = edge ? TINT[c] : (data[o + c] + TINT[c]) / 2;
    } else {
      for (let c = 0; c < 3; c++) data[o + c] *= DIM;
    }
  }
  context.putImageData(pixels, 0, 0);
}

function drawMask(context, mask, width, height) {
  const pixels = context.createImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    const value = mask[i] ? 255 : 0;
    pixels.data.set([value, value, value, 255], 4 * i);
  }
  context.putImageData(pixels, 0, 0);
}

// ---------------------------------------------------------------- images

async function segmentImage(file) {
  setState("running");
  say("Segmenting…");
  const form = new FormData();
  form.append("file", file);
  const started = performance.now();
  const maskBlob = await (await api("/segment", { method: "POST", body: form })).blob();
  const milliseconds = performance.now() - started;

  const maskImage = await createImageBitmap(maskBlob);
  const { width, height } = maskImage;
  const scratch = new OffscreenCanvas(width, height).getContext("2d", { willReadFrequently: true });
  scratch.drawImage(maskImage, 0, 0);
  const grey = scratch.getImageData(0, 0, width, height).data;
  const mask = new Uint8Array(width * height);
  for (let i = 0; i < mask.length; i++) mask[i] = grey[4 * i] > 127 ? 1 : 0;

  $("mask").src = objectUrl(maskBlob);
  $("download-mask").href = $("mask").src;
  $("download-mask").download = `${stem(file.name)}.mask.png`;

  const canvas = $("overlay");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  let original;
  try {
    original = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    original = null; // e.g. TIFF: the server reads it, this browser cannot
  }
  if (original) {
    $("original").src = objectUrl(file);
    context.drawImage(original, 0, 0, width, height);
    drawOverlay(context, mask, width, height);
  } else {
    $("original").removeAttribute("src");
    $("original").alt = "this browser cannot display this image format";
    const overlay = await createImageBitmap(await (await api("/segment?format=overlay", { method: "POST", body: form })).blob());
    context.drawImage(overlay, 0, 0);
  }
  const overlayBlob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  $("download-overlay").href = objectUrl(overlayBlob);
  $("download-overlay").download = `${stem(file.name)}.overlay.png`;

  const foreground = mask.reduce((sum, v) => sum + v, 0) / mask.length;
  $("image-stats").textContent =
    `${width} × ${height} px · foreground ${(100 * foreground).toFixed(1)} % of the image · ${Math.round(milliseconds)} ms`;
  $("image-result").hidden = false;
  say("Done: the tinted region is what the network takes for the object.");
  setState("image-done");
}

// ---------------------------------------------------------------- videos

// One bar for the upload, then for the whole job: the server reports the job's percentage over all
// its stages (stages weighted by their expected share of its time, never going backwards) and the
// time left at the pace so far (service/jobs.py, ProgressMeter); the page only shows them.
class Progress {
  constructor() {
    $("progress").value = 0;
    $("eta").textContent = "";
    $("progress-box").hidden = false;
  }

  uploaded(loaded, total) {
    $("progress").value = total ? loaded / total : 0;
    $("stage").textContent = `Uploading ${formatBytes(loaded)} / ${formatBytes(total)}`;
  }

  // A job status's state and progress: { stage, current, total, percent, eta_s }.
  job(state, { stage, current, total, percent, eta_s: eta }) {
    const queued = state === "queued";
    $("progress").value = queued ? 0 : percent / 100;
    const count = !queued && total ? ` ${current} / ${total}` : "";
    $("stage").textContent = `${STAGE_LABELS[queued ? "queued" : stage] ?? stage}${count}`;
    $("eta").textContent = queued ? "waiting" : eta != null ? `about ${formatSeconds(eta)} left` : "";
  }
}

function upload(url, file, progress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    job.xhr = xhr;
    xhr.open("POST", url);
    for (const [name, value] of Object.entries(keyHeaders())) xhr.setRequestHeader(name, value);
    xhr.responseType = "json";
    xhr.upload.onprogress = (event) => event.lengthComputable && progress.uploaded(event.loaded, event.total);
    xhr.onload = () => (xhr.status === 202
      ? resolve(xhr.response)
      : reject(new ApiError(xhr.status, errorMessage(xhr.status, xhr.response, xhr.statusText))));
    xhr.onerror = () => reject(new Error("the upload failed: the server could not be reached"));
    xhr.onabort = () => reject(new Cancelled());
    const form = new FormData();
    form.append("file", file);
    xhr.send(form);
  });
}

async function poll(url, progress) {
  for (;;) {
    const status = await (await api(url)).json();
    progress.job(status.state, status.progress);
    if (status.state === "succeeded") return status;
    if (status.state === "cancelled") throw new Cancelled();
    if (status.state === "failed") throw new Error(status.error || "the job failed");
    await sleep(POLL_MS);
  }
}

async function segmentVideo(file) {
  setState("running");
  const steps = Number($("steps").value || 0);
  const query = new URLSearchParams({ steps, stride: $("stride").value || 1, format: "zip" });
  if ($("max-frames").value) query.set("max_frames", $("max-frames").value);
  const progress = new Progress();
  job = { xhr: null, url: null, cancelled: false };
  $("cancel").hidden = false;
  $("cancel").disabled = false;
  say("");
  progress.uploaded(0, file.size);
  const submitted = await upload(`/adapt-and-segment?${query}`, file, progress);
  job.url = submitted.url;
  if (job.cancelled) await api(job.url, { method: "DELETE" }); // cancel pressed during the upload's last moments
  const status = await poll(job.url, progress);
  $("cancel").hidden = true;
  const result = await (await api(`${job.url}/result?format=json`)).json();
  $("progress-box").hidden = true;
  player = new Player(file, result, status);
  await player.open();
  const seconds = Object.entries(status.timings).map(([stage, s]) => `${stage} ${s.toFixed(1)} s`).join(" · ");
  $("video-stats").textContent = `${result.frames} frames, ${result.width} × ${result.height} px · ${seconds}` +
    adaptationNote(result.adaptation);
  say("Done: press play, or move the slider to look at one frame.");
  setState("video-done");
}

async function cancel() {
  if (!job) return;
  job.cancelled = true;
  $("cancel").disabled = true;
  say("Cancelling…");
  if (job.url) {
    await api(job.url, { method: "DELETE" }).catch((error) => showError(`Could not cancel: ${error.message}`));
  } else {
    job.xhr?.abort();
  }
}

// What the adaptation safeguard and the mask checks did (training/adapt.py), in words; nothing for a 0-step job.
function adaptationNote(adaptation) {
  if (!adaptation) return "";
  if (adaptation.decision === "kept") {
    const appearance = adaptation.appearance_check ? ", masks kept out of background colours" : "";
    const components = adaptation.component_check ? ", detached regions held back" : "";
    const motion = adaptation.motion_check ? ", growth moving with the background held back" : "";
    return ` · adaptation kept (${adaptation.steps} steps${appearance}${components}${motion})`;
  }
  if (adaptation.reverted_by === "steadiness") {
    return " · adaptation reverted: its masks flickered from frame to frame, so the original network's masks are shown";
  }
  return " · adaptation reverted: it did not explain held-out frames' motion better, so the original network segmented";
}

// Plays a job's masks over the frames of the local file. Mask i belongs to source frame
// result.frame_indices[i]; at the source frame rate (result.fps is per kept frame, i.e. divided by
// the stride) that frame starts at index / rate, and the middle of its display interval is sought.
class Player {
  constructor(file, result, status) {
    this.file = file;
    this.result = result;
    this.jobUrl = status.url;
    this.sourceFps = result.fps * (status.options.stride || 1);
    this.masks = new Map();
    this.index = 0;
    this.wanted = 0;
    this.drawing = null;
    this.drawn = false;
    this.playing = false;
    this.hasFrames = false;
    this.canvas = $("player");
    this.context = this.canvas.getContext("2d", { willReadFrequently: true });
    this.video = $("source");
  }

  async open() {
    const { width, height, frames } = this.result;
    this.canvas.width = width;
    this.canvas.height = height;
    $("frame").max = String(frames - 1);
    $("frame").value = "0";
    this.video.src = objectUrl(this.file);
    const loaded = await Promise.race([
      once(this.video, "loadeddata").then(() => true),
      once(this.video, "error").then(() => false),
      sleep(10_000).then(() => false),
    ]);
    this.hasFrames = loaded;
    for (const input of document.querySelectorAll("input[name=view]")) {
      input.disabled = !loaded && input.value !== "mask";
      input.checked = loaded ? input.value === "overlay" : input.value === "mask";
    }
    if (!loaded) say("This browser cannot play the file itself, so only the masks are shown.");
    $("video-result").hidden = false;
    await this.show(0);
  }

  mask(index) {
    if (!this.masks.has(index)) this.masks.set(index, decodeRle(this.result.masks[index]));
    return this.masks.get(index);
  }

  view() {
    return document.querySelector("input[name=view]:checked").value;
  }

  // Draw frame ``index``; requests made while a frame is being drawn collapse into the latest.
  show(index) {
    this.wanted = index;
    // .finally runs as a promise reaction, so after the assignment even when there is nothing to draw
    this.drawing ??= this.drawWanted().finally(() => {
      this.drawing = null;
    });
    return this.drawing;
  }

  async drawWanted() {
    while (this.index !== this.wanted || !this.drawn) {
      this.drawn = true;
      this.index = this.wanted;
      await this.draw(this.index);
    }
  }

  redraw() {
    this.drawn = false;
    return this.show(this.index);
  }

  async draw(index) {
    const { width, height, frame_indices: sources, frames } = this.result;
    const view = this.view();
    if (view === "mask" || !this.hasFrames) {
      drawMask(this.context, this.mask(index), width, height);
    } else {
      const time = (sources[index] + 0.5) / this.sourceFps;
      if (Math.abs(this.video.currentTime - time) > 1e-6) {
        const seeked = once(this.video, "seeked");
        this.video.currentTime = time;
        await seeked;
      }
      this.context.drawImage(this.video, 0, 0, width, height);
      if (view === "overlay") drawOverlay(this.context, this.mask(index), width, height);
    }
    $("frame").value = String(index);
    $("frame-label").textContent = `frame ${index + 1} of ${frames} · source frame ${sources[index]}`;
    this.canvas.dataset.frame = String(index);
    this.canvas.dataset.view = view;
  }

  async play() {
    if (this.playing) return;
    this.playing = true;
    $("play").textContent = "❚❚";
    $("play").setAttribute("aria-label", "Pause");
    if (this.index >= this.result.frames - 1) await this.show(0);
    const interval = 1000 / this.result.fps;
    while (this.playing && this.index < this.result.frames - 1) {
      const started = performance.now();
      await this.show(this.index + 1);
      await sleep(Math.max(0, interval - (performance.now() - started)));
    }
    this.stop();
  }

  stop() {
    this.playing = false;
    $("play").textContent = "▶";
    $("play").setAttribute("aria-label", "Play");
  }

  async download(button) {
    const format = button.dataset.format;
    const names = { zip: "masks.zip", video: "mask.mp4", json: "masks.json" };
    const label = button.textContent;
    button.disabled = true;
    button.textContent = "Preparing…";
    try {
      const blob = await (await api(`${this.jobUrl}/result?format=${format}`)).blob();
      const link = document.createElement("a");
      link.href = objectUrl(blob);
      link.download = `${stem(this.file.name)}.${names[format]}`;
      document.body.append(link);
      link.click();
      link.remove();
    } catch (error) {
      showError(`Download failed: ${error.message}`);
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  }
}

// ---------------------------------------------------------------- wiring

async function run() {
  $("submit").disabled = true;
  $("file").disabled = true;
  clearResults();
  try {
    await (chosen.kind === "video" ? segmentVideo(chosen.file) : segmentImage(chosen.file));
  } catch (error) {
    $("progress-box").hidden = true;
    if (error instanceof Cancelled) {
      say("Cancelled.");
      setState("cancelled");
    } else {
      if (error instanceof ApiError && error.status === 401) {
        $("key-box").open = true;
        $("apikey").focus();
        showError(`This server needs an API key: enter it under “API key” and try again (${error.message}).`);
      } else {
        showError(`Error: ${error.message}`);
      }
      say("");
      setState("error");
    }
  } finally {
    job = null;
    $("cancel").hidden = true;
    $("submit").disabled = false;
    $("file").disabled = false;
  }
}

const dropzone = $("dropzone");
dropzone.addEventListener("click", () => $("file").click());
dropzone.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    $("file").click();
  }
});
dropzone.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropzone.classList.add("over");
});
dropzone.addEventListener("dragleave", () => dropzone.classList.remove("over"));
dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropzone.classList.remove("over");
  choose(event.dataTransfer.files[0]);
});
document.addEventListener("paste", (event) => event.clipboardData.files[0] && choose(event.clipboardData.files[0]));
$("file").addEventListener("change", () => choose($("file").files[0]));

$("upload").addEventListener("submit", (event) => {
  event.preventDefault();
  if (chosen && !job) run();
});
$("cancel").addEventListener("click", cancel);

$("apikey").value = sessionStorage.getItem("gwm-api-key") || "";
$("apikey").addEventListener("input", () => sessionStorage.setItem("gwm-api-key", apiKey()));

$("play").addEventListener("click", () => (player?.playing ? player.stop() : player?.play()));
$("frame").addEventListener("input", () => {
  player?.stop();
  player?.show(Number($("frame").value));
});
for (const input of document.querySelectorAll("input[name=view]")) input.addEventListener("change", () => player?.redraw());
for (const button of document.querySelectorAll("button[data-format]")) {
  button.addEventListener("click", () => player?.download(button));
}
$("player").addEventListener("keydown", (event) => {
  if (!player) return;
  const steps = { ArrowRight: 1, ArrowLeft: -1 };
  if (event.key === " ") {
    event.preventDefault();
    player.playing ? player.stop() : player.play();
  } else if (event.key in steps) {
    event.preventDefault();
    player.stop();
    player.show(Math.min(Math.max(player.index + steps[event.key], 0), player.result.frames - 1));
  }
});
