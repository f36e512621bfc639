"""A short, bounded run of bench/bench_load.py against a real server on loopback.

Running the bench itself (rather than a second load generator here) keeps
one implementation of the load and keeps the bench from rotting. The bench
exits non-zero on any 5xx, a bad input not answered 4xx, a video job that
did not succeed or an upload left behind; this test also bounds memory
growth and checks that the queue depth was visible in /metrics.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers.paths import DAVIS_FRAMES, REPO

pytestmark = pytest.mark.slow

RSS_GROWTH_MB = 64  # the image phase may settle allocator arenas, not grow with the request count


def test_short_load_run_holds(tiny_model, tmp_path) -> None:
    if not (DAVIS_FRAMES / "bear").is_dir():
        pytest.skip(f"DAVIS frames not found under {DAVIS_FRAMES}")
    onnx_path, checkpoint_path = tiny_model
    report_path = tmp_path / "load.json"
    command = [
        sys.executable, str(REPO / "bench" / "bench_load.py"),
        "--phases", "images", "videos",
        "--clients", "8", "--warmup", "3", "--duration", "6", "--bad-every", "5",
        "--video-jobs", "2", "--video-clients", "2", "--video-frames", "6", "--steps", "1", "--video-cap", "120",
        "--model", str(onnx_path), "--checkpoint", str(checkpoint_path), "--json", str(report_path),
    ]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(report_path.read_text())

    image = report["image"]
    assert image["5xx"] == image["good_not_200"] == image["bad_not_4xx"] == 0
    assert image["statuses"]["good 200"] > 50 and image["p99_ms"] is not None
    assert report["rss_mb"]["after_images"] - report["rss_mb"]["before"] < RSS_GROWTH_MB

    video = report["video"]
    assert video["states"] == {"succeeded": 2}
    assert video["max_queue_depth"] >= 1  # jobs waiting behind the running one were visible
    assert video["images_meanwhile"]["5xx"] == 0
    assert report["uploads_left"] == 0
