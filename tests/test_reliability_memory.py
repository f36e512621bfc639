"""Requests small on the wire and huge in pixels, against a real server process (bench/bench_load.py).

16 zero PNGs of 6300x6300 px are 603 kB on the wire and 635 MP decoded; before a per-request pixel
budget, one such request took 5.7 GB and 52 s. The bench measures the server's own peak resident
memory (VmHWM) per case, so these bounds are the server's, not the test runner's.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers.paths import REPO

pytestmark = pytest.mark.slow

ONE_REQUEST_PEAK_MB = 2048
CONCURRENT_PEAK_MB = 3072
RETAINED_MB = 400  # what the server may keep resident after all cases, above where it started


def test_huge_pixel_requests_stay_within_memory_bounds(tiny_model, tmp_path) -> None:
    onnx_path, checkpoint_path = tiny_model
    report_path = tmp_path / "memory.json"
    command = [
        sys.executable, str(REPO / "bench" / "bench_load.py"), "--phases", "memory",
        "--memory-batches", "16", "1", "--memory-concurrent", "1", "4", "--memory-timeout", "120",
        "--memory-stop-above-mb", str(CONCURRENT_PEAK_MB),  # old code would go on to take ~23 GB
        "--model", str(onnx_path), "--checkpoint", str(checkpoint_path), "--json", str(report_path),
    ]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    cases = {(c["images_per_request"], c["concurrent"]): c for c in json.loads(report_path.read_text())["memory"]}
    assert len(cases) == 4, run.stdout[-3000:]

    batch = cases[16, 1]  # 635 MP in one request: refused from the headers, before any decoding
    assert batch["statuses"] == {"413": 1} and batch["max_s"] < 30, batch
    assert batch["peak_rss_mb"] < ONE_REQUEST_PEAK_MB, batch
    assert cases[16, 4]["statuses"] == {"413": 4} and cases[16, 4]["peak_rss_mb"] < CONCURRENT_PEAK_MB

    single = cases[1, 1]  # 40 MP, the largest image allowed: served
    assert single["statuses"] == {"200": 1} and single["peak_rss_mb"] < ONE_REQUEST_PEAK_MB, single
    crowd = cases[1, 4]  # four at once: admitted by pixels in flight, the rest wait (or get a 429)
    assert set(crowd["statuses"]) <= {"200", "429"} and crowd["statuses"].get("200", 0) >= 1, crowd
    assert crowd["statuses"].get("429", 0) == 0 or crowd["retry_after"], crowd
    assert crowd["peak_rss_mb"] < CONCURRENT_PEAK_MB, crowd
    assert crowd["rss_after_mb"] - batch["rss_start_mb"] < RETAINED_MB, (batch, crowd)
