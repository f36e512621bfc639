"""Benchmark the service on loopback: /segment latency and throughput next to bare onnxruntime,
and one video through /adapt-and-segment with wall time per stage.

    python bench/bench_service.py                  # shipped weights
    python bench/bench_service.py --random-model   # default architecture, random weights (CI)

The server runs as its own process (uvicorn, embedded queue) so that client load does not share
its interpreter. Everything is bounded: a fixed number of requests, a time cap, one video.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.inference import OnnxSegmenter
from service.settings import Settings
from training.frames import DEFAULT_EVAL_DATA, DEFAULT_RESOLUTION

DAVIS = (REPO / DEFAULT_EVAL_DATA / "JPEGImages" / DEFAULT_RESOLUTION / "bear").resolve()


def davis_frames(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """``count`` DAVIS frames (looping the sequence if needed) resized to ``size`` = (w, h)."""
    paths = sorted(DAVIS.glob("*.jpg"))
    if not paths:
        raise SystemExit(f"DAVIS frames not found in {DAVIS}")
    return [np.asarray(Image.open(paths[i % len(paths)]).convert("RGB").resize(size)) for i in range(count)]


def random_model(directory: Path) -> tuple[Path, Path]:
    """The default architecture with random weights: same cost as the trained model."""
    from models.segmenters import build_segmenter
    from models.spec import ModelSpec
    from training.checkpoint import save_checkpoint
    from training.export import export_onnx

    options = {"num_regions": 4}
    model = build_segmenter("unet", **options)
    spec = ModelSpec("unet", options, version="bench-random")
    save_checkpoint(directory / "bench.pt", model, spec)
    return export_onnx(model, spec, directory / "bench.onnx"), directory / "bench.pt"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def bare_latencies(model: Path, jpeg: bytes, count: int) -> list[float]:
    """Decode + preprocess + onnxruntime, in this process, no HTTP: the floor for /segment."""
    segmenter = OnnxSegmenter(model, "auto")  # the same session options the service uses
    times = []
    for _ in range(count):
        started = time.perf_counter()
        rgb = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
        segmenter.forward(segmenter.prepare(rgb)[None])
        times.append(time.perf_counter() - started)
    return times


#: Each bench server's own data directory (removed by stop_server): an embedded server holds its
#: directory alone (service/data_lock.py), so two benches side by side would otherwise refuse each other.
_DATA_DIRS: dict[subprocess.Popen, str] = {}


def start_server(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """A uvicorn server of the service with ``env`` (GWM_* settings) on a free port, once ready."""
    env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    own_data_dir = "GWM_DATA_DIR" not in env
    if own_data_dir:
        env["GWM_DATA_DIR"] = tempfile.mkdtemp(prefix="gwm-bench-")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service.api.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=REPO, env=env,
    )
    if own_data_dir:
        _DATA_DIRS[server] = env["GWM_DATA_DIR"]
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise SystemExit("server did not become ready")


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    server.wait(timeout=30)
    if server in _DATA_DIRS:
        shutil.rmtree(_DATA_DIRS.pop(server), ignore_errors=True)


def http_latencies(url: str, jpeg: bytes, clients: int, count: int, time_cap: float) -> tuple[list[float], float]:
    """``count`` POST /segment split over ``clients`` threads; returns latencies and wall time."""
    deadline = time.monotonic() + time_cap

    def worker(n: int) -> list[float]:
        times = []
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in range(n):
                if time.monotonic() > deadline:
                    break
                started = time.perf_counter()
                response = client.post("/segment", files={"file": ("bench.jpg", jpeg, "image/jpeg")})
                response.raise_for_status()
                times.append(time.perf_counter() - started)
        return times

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(worker, [count // clients] * clients))
    return [t for r in results for t in r], time.perf_counter() - started


def run_video(url: str, video: bytes, steps: int, time_cap: float) -> dict:
    with httpx.Client(base_url=url, timeout=120) as client:
        started = time.perf_counter()
        job = client.post(f"/adapt-and-segment?steps={steps}&format=json",
                          files={"file": ("bench.mp4", video, "video/mp4")}).json()
        upload = time.perf_counter() - started
        while time.perf_counter() - started < time_cap:
            status = client.get(job["url"]).json()
            if status["state"] in {"succeeded", "failed", "cancelled"}:
                break
            time.sleep(0.25)
        else:
            client.delete(job["url"])
            raise SystemExit(f"video job exceeded {time_cap} s")
        fetch = time.perf_counter()
        client.get(f"{job['url']}/result?format=zip").raise_for_status()
        return {"status": status, "upload_s": upload, "result_zip_s": time.perf_counter() - fetch,
                "total_s": time.perf_counter() - started}


def encode_mp4(frames: list[np.ndarray], fps: int = 24) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random-model", action="store_true", help="benchmark a random-weight default model")
    parser.add_argument("--requests", type=int, default=120, help="/segment requests per phase")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients in the throughput phase")
    parser.add_argument("--video-frames", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--time-cap", type=float, default=300, help="seconds per phase at most")
    parser.add_argument("--skip-video", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings()
        model, checkpoint = random_model(Path(scratch)) if args.random_model else (settings.model_path, settings.checkpoint_path)
        env = {"GWM_MODEL_PATH": str(model), "GWM_CHECKPOINT_PATH": str(checkpoint),
               "GWM_DATA_DIR": str(Path(scratch) / "data"), "GWM_QUEUE_MODE": "embedded"}
        image = davis_frames(1, (854, 480))[0]
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=90)
        jpeg = buffer.getvalue()

        rows = []
        bare = bare_latencies(model, jpeg, args.requests)
        rows.append(("bare ORT + decode (1 thread)", bare, sum(bare)))
        # Image phase as an API process in redis mode would run (1 PyTorch thread, see
        # GWM_TORCH_THREADS); video phase with PyTorch's default threads, as a worker would.
        server, url = start_server({**env, "GWM_TORCH_THREADS": "1"})
        try:
            http_latencies(url, jpeg, 1, 10, args.time_cap)  # warm-up
            sequential, wall = http_latencies(url, jpeg, 1, args.requests, args.time_cap)
            rows.append(("/segment, 1 client", sequential, wall))
            concurrent, wall = http_latencies(url, jpeg, args.clients, args.requests, args.time_cap)
            rows.append((f"/segment, {args.clients} clients", concurrent, wall))
        finally:
            stop_server(server)
        video = None
        if not args.skip_video:
            server, url = start_server(env)
            try:
                clip = encode_mp4(davis_frames(args.video_frames, (854, 480)))
                video = run_video(url, clip, args.steps, args.time_cap)
            finally:
                stop_server(server)

    print(f"\nimage 854x480 JPEG, model {Path(model).name}, {os.cpu_count()} CPUs")
    print(f"{'path':32} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>7}")
    for name, times, wall in rows:
        print(f"{name:32} {len(times):5d} {percentile(times, 50) * 1e3:8.1f} "
              f"{percentile(times, 95) * 1e3:8.1f} {len(times) / wall:7.1f}")
    ratio = statistics.median(sequential) / statistics.median(bare)
    print(f"e2e p50 / bare p50 = {ratio:.2f} (target <= 1.5)")
    if video is not None:
        status = video["status"]
        print(f"\nvideo {args.video_frames} frames 854x480, {args.steps} steps: {status['state']}"
              + (f" ({status['error']})" if status["error"] else ""))
        print(f"{'stage':32} {'seconds':>8}")
        stages = {"upload + probe": video["upload_s"], **status["timings"],
                  "result zip download": video["result_zip_s"], "total (client wall)": video["total_s"]}
        for stage, seconds in stages.items():
            print(f"{stage:32} {seconds:8.2f}")
        print(json.dumps({"job_timings": status["timings"]}))


if __name__ == "__main__":
    main()
