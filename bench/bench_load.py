"""Load and soak test of the service on loopback: does it stay up, fast and flat under pressure?

Phase 1, images: ``--clients`` threads post to /segment for ``--duration`` seconds; one request in
``--bad-every`` is a bad input (decompression bomb, truncated JPEG, text) that must get a 4xx while
the good ones keep succeeding. Reports p50/p95/p99, req/s, the 5xx count and the server's resident
memory (from its own /metrics) before and after.

Phase 2, videos while images are served: ``--video-jobs`` jobs are submitted at once while
``--video-clients`` threads keep posting images; the queue depth is sampled from /metrics until
every job has ended. All jobs must succeed and the uploads folder must be empty afterwards.

    python bench/bench_load.py                                   # 16 clients x 60 s, random default model
    python bench/bench_load.py --clients 16 --duration 20        # shorter
    python bench/bench_load.py --model m.onnx --checkpoint m.pt  # a given model (the tests pass a tiny one)

Phase 3, memory: requests that are small on the wire but huge in pixels (``--memory-images``
zero PNGs of ``--memory-side`` px squared each, ~38 kB apiece, ``format=overlay``), first one alone,
then ``--memory-concurrent`` at once. For each case it prints the statuses, the slowest answer and
the server's peak resident memory (``VmHWM``, reset before each case) and its RSS a moment after.

    python bench/bench_load.py --phases memory                                         # 16 x 6300^2, alone and 4 at once
    python bench/bench_load.py --phases memory --memory-batches 16 1 --memory-concurrent 1 4

Exit status 1 when any check fails (a 5xx, a job not succeeded, an upload left behind, a bad input
not answered 4xx, a memory case answered 5xx or not at all). Everything runs on 127.0.0.1 and is
bounded in time.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from bench_service import davis_frames, encode_mp4, percentile, random_model, start_server, stop_server
from PIL import Image

logger = logging.getLogger("bench_load")

TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class LoadStats:
    """What a set of client threads saw."""

    latencies: list[float] = field(default_factory=list)  # of good requests answered 200
    statuses: Counter = field(default_factory=Counter)  # "good 200", "bad 413", ...
    bad_latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, status: int, seconds: float) -> None:
        with self.lock:
            self.statuses[f"{kind} {status}"] += 1
            if kind == "good" and status == 200:
                self.latencies.append(seconds)
            elif kind == "bad":
                self.bad_latencies.append(seconds)

    def summary(self) -> dict[str, object]:
        total = sum(self.statuses.values())
        server_errors = sum(n for key, n in self.statuses.items() if int(key.split()[1]) >= 500)
        bad_not_4xx = sum(n for key, n in self.statuses.items() if key.startswith("bad") and not 400 <= int(key.split()[1]) < 500)
        good_not_200 = sum(n for key, n in self.statuses.items() if key.startswith("good") and key != "good 200")
        q = {f"p{p}_ms": round(percentile(self.latencies, p) * 1e3, 1) if self.latencies else None for p in (50, 95, 99)}
        return {
            "requests": total,
            "req_per_s": round(total / self.wall_s, 1) if self.wall_s else 0.0,
            **q,
            "max_ms": round(max(self.latencies) * 1e3, 1) if self.latencies else None,
            "bad_inputs_max_ms": round(max(self.bad_latencies) * 1e3, 1) if self.bad_latencies else None,
            "statuses": dict(sorted(self.statuses.items())),
            "5xx": server_errors,
            "good_not_200": good_not_200,
            "bad_not_4xx": bad_not_4xx,
        }


def bad_inputs() -> list[tuple[str, bytes]]:
    """Inputs that must be rejected with a 4xx without costing the server much."""
    bomb = io.BytesIO()
    Image.new("1", (12000, 12000)).save(bomb, format="PNG")  # 144 MP in ~20 kB
    jpeg = io.BytesIO()
    Image.new("RGB", (640, 480), (40, 90, 200)).save(jpeg, format="JPEG")
    return [("bomb.png", bomb.getvalue()), ("cut.jpg", jpeg.getvalue()[:400]), ("notes.txt", b"not an image")]


def image_clients(url: str, jpeg: bytes, clients: int, stop: threading.Event, bad_every: int) -> LoadStats:
    """Run ``clients`` threads posting /segment until ``stop`` is set."""
    stats = LoadStats()
    rejects = bad_inputs()

    def client(seed: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            n, sent_bad = seed, seed
            while not stop.is_set():
                n += 1
                bad = bad_every > 0 and n % bad_every == 0
                sent_bad += bad
                name, data = rejects[sent_bad % len(rejects)] if bad else ("load.jpg", jpeg)
                started = time.perf_counter()
                try:
                    status = http.post("/segment", files={"file": (name, data)}).status_code
                except httpx.TransportError as exc:  # a dropped connection counts as a server failure
                    logger.warning("transport error: %s", exc)
                    status = 599
                stats.record("bad" if bad else "good", status, time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for seed in range(clients):
            pool.submit(client, seed)
        stop.wait()
    stats.wall_s = time.perf_counter() - started
    return stats


def scrape(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=30).text


def gauge(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, flags=re.MULTILINE)
    return float(found.group(1)) if found else float("nan")


def rss_mb(url: str) -> float:
    """The server's resident memory, as its Prometheus process collector reports it."""
    return round(gauge(scrape(url), "process_resident_memory_bytes") / 2**20, 1)


def image_phase(
    url: str, jpeg: bytes, clients: int, seconds: float, bad_every: int, rss_every: float = 0.0
) -> tuple[LoadStats, list[tuple[float, float]]]:
    """Image load for ``seconds``; samples the server's RSS every ``rss_every`` seconds (0: never)."""
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    samples: list[tuple[float, float]] = []

    def sample_rss() -> None:
        started = time.perf_counter()
        while not stop.wait(rss_every):
            samples.append((round(time.perf_counter() - started, 1), rss_mb(url)))

    sampler = threading.Thread(target=sample_rss, daemon=True)
    timer.start()
    if rss_every:
        sampler.start()
    try:
        return image_clients(url, jpeg, clients, stop, bad_every), samples
    finally:
        timer.cancel()


def video_phase(url: str, clip: bytes, jobs: int, steps: int, jpeg: bytes, clients: int, cap_s: float) -> dict:
    """Submit ``jobs`` videos at once while images are served; sample queue depth until all end."""
    stop = threading.Event()
    with ThreadPoolExecutor(1) as background:
        images = background.submit(image_clients, url, jpeg, clients, stop, 0)
        started = time.perf_counter()
        samples: list[tuple[float, float]] = []
        with httpx.Client(base_url=url, timeout=60) as http:
            urls = []
            for i in range(jobs):
                response = http.post(f"/adapt-and-segment?steps={steps}&format=json", files={"file": (f"v{i}.mp4", clip)})
                response.raise_for_status()
                urls.append(response.json()["url"])
            states: dict[str, dict] = {}
            while time.perf_counter() - started < cap_s:
                samples.append((round(time.perf_counter() - started, 1), gauge(scrape(url), "gwm_queue_depth")))
                states = {u: http.get(u).json() for u in urls}
                if all(s["state"] in TERMINAL for s in states.values()):
                    break
                time.sleep(0.5)
            else:
                for u in urls:
                    http.delete(u)
        elapsed = time.perf_counter() - started
        stop.set()
        stats = images.result()
    return {
        "jobs": jobs,
        "states": dict(Counter(s["state"] for s in states.values())),
        "errors": [s["error"] for s in states.values() if s.get("error")],
        "all_ended_s": round(elapsed, 1),
        "queue_depth_samples": samples,
        "max_queue_depth": max((d for _, d in samples), default=0),
        "images_meanwhile": stats.summary(),
    }


def zero_png(side: int) -> bytes:
    """A ``side`` x ``side`` black greyscale PNG: ~1000x smaller than its pixels."""
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


def _proc_status_kb(pid: int, field_name: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (VmRSS, VmHWM)."""
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"^{field_name}:\s+(\d+) kB$", text, flags=re.MULTILINE)
    if found is None:
        raise RuntimeError(f"{field_name} not in /proc/{pid}/status")
    return int(found.group(1))


def reset_peak_rss(pid: int) -> None:
    """Start a new high-water mark for ``pid``'s resident memory (Linux: clear_refs value 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def memory_case(url: str, pid: int, png: bytes, images: int, concurrent: int, timeout: float) -> dict:
    """``concurrent`` requests of ``images`` copies of ``png`` at once; the server's peak RSS meanwhile."""
    files = [("file", (f"zero-{i}.png", png, "image/png")) for i in range(images)]
    time.sleep(1.0)  # let the previous case's memory go back before the new high-water mark starts
    reset_peak_rss(pid)
    rss_start = _proc_status_kb(pid, "VmRSS") / 1024

    def one_request(_: int) -> tuple[int, float, str | None]:
        started = time.perf_counter()
        try:
            response = httpx.post(f"{url}/segment?format=overlay", files=files, timeout=timeout)
        except httpx.TransportError as exc:  # a dropped connection or a timeout is a server failure
            return 599, time.perf_counter() - started, f"{type(exc).__name__}"
        retry_after = response.headers.get("retry-after")
        return response.status_code, time.perf_counter() - started, retry_after

    with ThreadPoolExecutor(concurrent) as pool:
        answers = list(pool.map(one_request, range(concurrent)))
    peak = _proc_status_kb(pid, "VmHWM") / 1024
    time.sleep(2.0)
    return {
        "images_per_request": images,
        "concurrent": concurrent,
        "request_bytes": len(png) * images,
        "statuses": dict(Counter(str(status) for status, _, _ in answers)),
        "retry_after": sorted({r for status, _, r in answers if status == 429 and r}),
        "max_s": round(max(seconds for _, seconds, _ in answers), 1),
        "rss_start_mb": round(rss_start, 1),
        "peak_rss_mb": round(peak, 1),
        "rss_after_mb": round(_proc_status_kb(pid, "VmRSS") / 1024, 1),
    }


def memory_phase(
    url: str, pid: int, side: int, batches: list[int], concurrency: list[int], timeout: float, stop_above_mb: float | None
) -> list[dict]:
    """Every (images per request, concurrent requests) case, in order, against one server.

    With ``stop_above_mb``, the cases after one whose peak passed it are skipped: a server that
    takes that much for one case would take the machine's memory in the next.
    """
    png = zero_png(side)
    cases = []
    for images in batches:
        for concurrent in concurrency:
            cases.append(memory_case(url, pid, png, images, concurrent, timeout))
            if stop_above_mb is not None and cases[-1]["peak_rss_mb"] > stop_above_mb:
                logger.warning("peak RSS %.0f MB > %.0f MB: skipping the remaining memory cases",
                               cases[-1]["peak_rss_mb"], stop_above_mb)
                return cases
    return cases


def print_report(report: dict) -> None:
    image = report["image"]
    rss = report["rss_mb"]
    if image:
        print(f"\n/segment load: {report['clients']} clients x {report['duration_s']} s, "
              f"1 in {report['bad_every']} requests a bad input, {report['cpus']} CPUs")
        print(f"  requests {image['requests']}  req/s {image['req_per_s']}  p50 {image['p50_ms']} ms  "
              f"p95 {image['p95_ms']} ms  p99 {image['p99_ms']} ms  max {image['max_ms']} ms")
        print(f"  statuses {image['statuses']}  5xx {image['5xx']}  bad inputs max {image['bad_inputs_max_ms']} ms")
        print(f"  server RSS MB (after {report['warmup_s']} s warm-up): before {rss['before']}  "
              f"during (s, MB) {rss['during_images']}  after {rss['after_images']}")
    video = report.get("video")
    if video:
        meanwhile = video["images_meanwhile"]
        print(f"\nvideo jobs while images are served: {video['jobs']} jobs -> {video['states']} in {video['all_ended_s']} s")
        changes = [s for i, s in enumerate(video["queue_depth_samples"]) if i == 0 or s[1] != video["queue_depth_samples"][i - 1][1]]
        print(f"  queue depth (s, depth) at each change, of {len(video['queue_depth_samples'])} samples: {changes}")
        print(f"  images meanwhile: {meanwhile['requests']} req, p50 {meanwhile['p50_ms']} ms, "
              f"p99 {meanwhile['p99_ms']} ms, 5xx {meanwhile['5xx']}")
        print(f"  server RSS MB after videos: {rss['after_videos']}")
    if report.get("memory"):
        print(f"\nmemory: zero PNGs of {report['memory_side']}x{report['memory_side']} px, format=overlay")
        print("  images/request  concurrent  request kB  statuses            Retry-After  slowest s  "
              "RSS start MB  peak RSS MB  RSS after MB")
        for case in report["memory"]:
            print(f"  {case['images_per_request']:>14}  {case['concurrent']:>10}  {case['request_bytes'] / 1024:>10.0f}  "
                  f"{json.dumps(case['statuses']):<18}  {','.join(case['retry_after']) or '-':>11}  {case['max_s']:>9}  "
                  f"{case['rss_start_mb']:>12}  {case['peak_rss_mb']:>11}  {case['rss_after_mb']:>12}")
    print(f"\nuploads left in the data dir: {report['uploads_left']}")
    print("PASS" if report["passed"] else f"FAIL: {report['failures']}")


def check(report: dict, video_jobs: int) -> list[str]:
    """What went wrong in a report, in words; empty when everything held."""
    failures = []
    video = report["video"]
    for name, stats in (("images", report["image"]), ("images during videos", video and video["images_meanwhile"])):
        if stats and (stats["5xx"] or stats["good_not_200"] or stats["bad_not_4xx"]):
            failures.append(f"{name}: 5xx={stats['5xx']} good_not_200={stats['good_not_200']} bad_not_4xx={stats['bad_not_4xx']}")
    if video and video["states"] != {"succeeded": video_jobs}:
        failures.append(f"video jobs: {video['states']} {video['errors']}")
    for case in report["memory"] or []:
        if any(int(status) >= 500 for status in case["statuses"]):
            failures.append(f"memory case {case['images_per_request']} images x {case['concurrent']}: {case['statuses']}")
    if report["uploads_left"]:
        failures.append(f"{report['uploads_left']} uploads left behind")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phases", nargs="+", choices=["images", "videos", "memory"], default=["images", "videos", "memory"])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of image load")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load before RSS is first read")
    parser.add_argument("--bad-every", type=int, default=10, help="every n-th request is a bad input (0: none)")
    parser.add_argument("--video-jobs", type=int, default=3, help="jobs submitted at once in phase 2 (0: skip)")
    parser.add_argument("--video-clients", type=int, default=4, help="image clients during phase 2")
    parser.add_argument("--video-frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="adaptation steps per video job")
    parser.add_argument("--video-cap", type=float, default=300.0, help="seconds phase 2 may take at most")
    parser.add_argument("--memory-side", type=int, default=6300, help="side of each zero PNG in the memory phase")
    parser.add_argument("--memory-batches", type=int, nargs="+", default=[16], help="images per request, one case each")
    parser.add_argument("--memory-concurrent", type=int, nargs="+", default=[1, 4], help="requests at once, one case each")
    parser.add_argument("--memory-timeout", type=float, default=600.0, help="seconds a memory-phase request may take")
    parser.add_argument("--memory-stop-above-mb", type=float, help="skip the remaining memory cases past this peak RSS")
    parser.add_argument("--model", type=Path, help="ONNX model (default: random default architecture)")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint for video jobs (with --model)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory() as scratch:
        model, checkpoint = (args.model, args.checkpoint) if args.model else random_model(Path(scratch))
        data_dir = Path(scratch) / "data"
        env = {"GWM_MODEL_PATH": str(model), "GWM_CHECKPOINT_PATH": str(checkpoint), "GWM_DATA_DIR": str(data_dir),
               "GWM_QUEUE_MODE": "embedded", "GWM_DEVICE": "cpu", "GWM_TORCH_THREADS": "1"}
        buffer = io.BytesIO()
        Image.fromarray(davis_frames(1, (854, 480))[0]).save(buffer, format="JPEG", quality=90)
        jpeg = buffer.getvalue()
        server, url = start_server(env)
        image = video = memory = None
        rss_before = rss_after = rss_end = None
        rss_samples: list[tuple[float, float]] = []
        try:
            if "images" in args.phases:
                # Warm-up at full concurrency: the allocator's high-water mark for N requests in flight
                # is reached here, so growth measured afterwards is what a leak would look like.
                image_phase(url, jpeg, args.clients, args.warmup, args.bad_every)
                rss_before = rss_mb(url)
                image, rss_samples = image_phase(url, jpeg, args.clients, args.duration, args.bad_every, args.duration / 5)
                rss_after = rss_mb(url)
            if "videos" in args.phases and args.video_jobs:
                clip = encode_mp4(davis_frames(args.video_frames, (320, 180)))
                video = video_phase(url, clip, args.video_jobs, args.steps, jpeg, args.video_clients, args.video_cap)
                rss_end = rss_mb(url)
            if "memory" in args.phases:
                memory = memory_phase(url, server.pid, args.memory_side, args.memory_batches, args.memory_concurrent,
                                      args.memory_timeout, args.memory_stop_above_mb)
        finally:
            stop_server(server)
        uploads = data_dir / "uploads"
        uploads_left = len(list(uploads.iterdir())) if uploads.is_dir() else 0

    report = {
        "clients": args.clients, "duration_s": args.duration, "warmup_s": args.warmup, "bad_every": args.bad_every, "cpus": os.cpu_count(),
        "image": image and image.summary(),
        "rss_mb": {"before": rss_before, "during_images": rss_samples, "after_images": rss_after, "after_videos": rss_end},
        "video": video,
        "memory_side": args.memory_side,
        "memory": memory,
        "uploads_left": uploads_left,
    }
    failures = check(report, args.video_jobs)
    report.update(passed=not failures, failures=failures)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
