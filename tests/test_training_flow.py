"""Optical flow estimators (training/flow.py) and the on-disk flow cache (training/flow_cache.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_training_evaluate import write_fake_davis

from training.flow import DISFlow, FarnebackFlow, FlowRecipe, build_flow_estimator
from training.flow_cache import FlowCache, FlowCacheSpec, compute_sequence_flow
from training.frames import list_sequences

SHIFT = (3.0, -2.0)  # (u, v): content moves 3 px right and 2 px up


def _translated_pair(shift=SHIFT, size=(96, 128), seed=0):
    rng = np.random.default_rng(seed)
    h, w = size
    big = rng.integers(0, 255, (h + 40, w + 40, 3), dtype=np.uint8)
    big = cv2.GaussianBlur(big, (0, 0), 1.5)
    u, v = shift
    a = big[20:20 + h, 20:20 + w]
    # frame_b[y + v, x + u] = frame_a[y, x]  <=>  frame_b = big shifted by (-u, -v)
    b = big[20 - int(v):20 - int(v) + h, 20 - int(u):20 - int(u) + w]
    return np.ascontiguousarray(a), np.ascontiguousarray(b)


@pytest.mark.parametrize("method", ["dis", "dis-fine", "dis-fast", "farneback"])
def test_estimators_recover_a_translation(method):
    a, b = _translated_pair()
    flow = build_flow_estimator(method)(a, b)
    assert flow.shape == (*a.shape[:2], 2) and flow.dtype == np.float32
    interior = flow[16:-16, 16:-16].reshape(-1, 2)
    assert np.median(interior[:, 0]) == pytest.approx(SHIFT[0], abs=0.5)
    assert np.median(interior[:, 1]) == pytest.approx(SHIFT[1], abs=0.5)
    # backward flow is the opposite translation
    back = build_flow_estimator(method)(b, a)[16:-16, 16:-16].reshape(-1, 2)
    assert np.median(back, axis=0) == pytest.approx([-SHIFT[0], -SHIFT[1]], abs=0.5)


def test_estimator_errors():
    with pytest.raises(ValueError, match="weights"):
        build_flow_estimator("raft")
    with pytest.raises(ValueError):
        build_flow_estimator("lucas-kanade")
    with pytest.raises(ValueError):
        DISFlow("turbo")
    assert isinstance(build_flow_estimator("farneback"), FarnebackFlow)


def test_compute_sequence_flow_indices_and_units():
    frames = list(_translated_pair())
    calls = []

    def estimator(x, y):
        calls.append((x is frames[0], y is frames[0]))
        return np.full((*x.shape[:2], 2), 4.0, np.float32)

    forward = compute_sequence_flow(frames, 1, estimator, size=(48, 32))
    assert forward.shape == (1, 48, 32, 2)
    assert calls == [(True, False)]  # frame 0 -> frame 1
    # resizing 96x128 -> 48x32 rescales u by 32/128 and v by 48/96
    assert forward[0, ..., 0] == pytest.approx(1.0) and forward[0, ..., 1] == pytest.approx(2.0)
    calls.clear()
    backward = compute_sequence_flow(frames, -1, estimator)
    assert backward.shape == (1, 96, 128, 2) and calls == [(False, True)]  # frame 1 -> frame 0


def test_video_flow_runs_at_the_flow_size_and_lands_in_the_same_grid_units():
    """Video jobs downscale frames to ``flow_size`` (GWM_FLOW_SIZE) before flow: the estimator sees the
    smaller frames, and the stored flow (input-grid pixels) is the same translation either way."""
    from training.data import FlowPairDataset

    class Recording:
        def __init__(self):
            self.sizes = set()

        def __call__(self, a, b):
            self.sizes.add(a.shape[:2])
            return DISFlow("fine")(a, b)

    frames = list(_translated_pair(shift=(4.0, -2.0)))
    medians = {}
    for flow_size, seen in [((96, 128), (96, 128)), ((48, 64), (48, 64))]:
        estimator = Recording()
        dataset = FlowPairDataset.from_frames(frames, estimator, (-1, 1), input_size=(48, 64), flow_size=flow_size)
        assert estimator.sizes == {seen}
        medians[flow_size] = dataset.flow.flows[0, 1, 8:-8, 8:-8].float().reshape(-1, 2).median(dim=0).values
    assert medians[(96, 128)].tolist() == pytest.approx([2.0, -1.0], abs=0.25)  # 4, -2 px at half the size
    assert medians[(48, 64)].tolist() == pytest.approx(medians[(96, 128)].tolist(), abs=0.25)


class _CountingEstimator:
    def __init__(self):
        self.inner = DISFlow("ultrafast")
        self.calls = 0

    def __call__(self, a, b):
        self.calls += 1
        return self.inner(a, b)


def test_flow_cache_builds_resumes_and_refuses_other_specs(tmp_path):
    root = write_fake_davis(tmp_path / "davis", frames=5)
    videos = list_sequences(root, "240p", ["train"])
    spec = FlowCacheSpec("dis-ultrafast", 24, 32, gaps=(-2, 1))
    cache = FlowCache(tmp_path / "cache", spec)
    estimator = _CountingEstimator()
    cache.build(videos, estimator, progress=False)
    assert estimator.calls == 2 * (3 + 4)
    assert json.loads((tmp_path / "cache" / "meta.json").read_text())["gaps"] == [-2, 1]
    files = sorted((tmp_path / "cache").rglob("*.npy"))
    assert [f.name for f in files] == ["gap+1.npy", "gap-2.npy"] * 2
    flow = cache.load("alpha", -2)
    assert flow.shape == (3, 24, 32, 2) and flow.dtype == np.float16
    # the background drifts 1 px/frame left at 64 px width -> -0.5 px/frame on a 32 px grid, so gap -2
    # (frame i -> i - 2) is about +1 px in u over most of the frame
    assert np.median(np.asarray(flow[..., 0], np.float32)) == pytest.approx(1.0, abs=0.35)

    # resume: nothing to compute, nothing rewritten
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    again = _CountingEstimator()
    FlowCache(tmp_path / "cache", spec).build(videos, again, progress=False)
    assert again.calls == 0
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes

    # an interrupted run (one file missing) recomputes exactly that file
    cache.path("beta", 1).unlink()
    partial = _CountingEstimator()
    FlowCache(tmp_path / "cache", spec).build(videos, partial, progress=False)
    assert partial.calls == 4
    assert {f: f.stat().st_mtime_ns for f in files if f != cache.path("beta", 1)} == {
        f: t for f, t in mtimes.items() if f != cache.path("beta", 1)}

    # reopening without a spec reads it back; a different spec is refused
    assert FlowCache(tmp_path / "cache").spec == spec
    with pytest.raises(ValueError):
        FlowCache(tmp_path / "cache", FlowCacheSpec("dis", 24, 32, gaps=(-2, 1)))
    with pytest.raises(ValueError):
        FlowCache(tmp_path / "cache", FlowCacheSpec("dis-ultrafast", 24, 32))
    with pytest.raises(FileNotFoundError):
        FlowCache(tmp_path / "not-a-cache")


def test_parallel_workers_write_the_same_cache_as_one_process(tmp_path):
    root = write_fake_davis(tmp_path / "davis", frames=5)
    videos = list_sequences(root, "240p", ["train"])
    spec = FlowCacheSpec("dis-ultrafast", 24, 32, gaps=(-1, 2))
    recipe = FlowRecipe("dis-ultrafast")
    FlowCache(tmp_path / "serial", spec).build(videos, recipe, progress=False)
    FlowCache(tmp_path / "parallel", spec).build(videos, recipe, progress=False, workers=2)
    for video in videos:
        for gap in spec.gaps:
            np.testing.assert_array_equal(FlowCache(tmp_path / "serial").load(video.name, gap),
                                          FlowCache(tmp_path / "parallel").load(video.name, gap))
    assert not list((tmp_path / "parallel").rglob("*.partial.npy"))
    with pytest.raises(TypeError, match="FlowRecipe"):
        FlowCache(tmp_path / "other", spec).build(videos, DISFlow("ultrafast"), progress=False, workers=2)


def test_cache_spec_records_what_changes_the_flow(tmp_path):
    assert FlowRecipe("dis-fine").settings() == {} and FlowRecipe("dis-fine").label() == "dis-fine"
    raft = FlowRecipe("raft", {"weights": "/some/where/raft-small.pth", "scale": 2, "iterations": 8, "device": "cpu"})
    assert raft.settings() == {"weights": "raft-small.pth", "scale": 2.0, "iterations": 8}
    assert raft.label() == "raft-2x8"
    spec = FlowCacheSpec("raft", 24, 32, settings=raft.settings())
    FlowCache(tmp_path / "cache", spec).root.mkdir()
    (tmp_path / "cache" / "meta.json").write_text(json.dumps({**spec.__dict__, "gaps": list(spec.gaps)}))
    assert FlowCache(tmp_path / "cache").spec == spec
    other = FlowCacheSpec("raft", 24, 32, settings={**raft.settings(), "iterations": 12})
    with pytest.raises(ValueError):
        FlowCache(tmp_path / "cache", other)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process parents from /proc")
def test_parallel_flow_workers_end_when_their_parent_is_killed(tmp_path):
    """SIGTERM to `gwm flow` (e.g. `pkill`) reaches only the parent; its workers must not keep going."""
    davis = write_fake_davis(tmp_path / "davis", sequences=tuple(f"s{i}" for i in range(8)), frames=40, size=(240, 427))
    script = (f"from training.flow import FlowRecipe; from training.flow_cache import FlowCache, FlowCacheSpec;"
              f"from training.frames import list_sequences;"
              f"FlowCache({str(tmp_path / 'cache')!r}, FlowCacheSpec('dis-fine', 64, 112, (-2, -1, 1, 2)))"
              f".build(list_sequences({str(davis)!r}), FlowRecipe('dis-fine'), progress=False, workers=2)")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1])

    def children() -> list[int]:
        """The pool's worker processes (not multiprocessing's resource tracker)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                command = (stat.parent / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == parent.pid and fields[0] != "Z" and b"spawn_main" in command:
                found.append(int(stat.parent.name))
        return found

    deadline = time.monotonic() + 60
    while len(children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = children()
    assert len(workers) >= 2, "the pool did not start"
    parent.send_signal(signal.SIGTERM)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()
                 and (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z")]
    assert not alive, f"workers {alive} outlived their parent"
