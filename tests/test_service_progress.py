"""Honest progress and prompt cancellation of video jobs (issue 14, items 5 and 6).

Totals are the job's real amounts of work (frames it will decode, frame pairs, steps, frames), the
percentage covers the whole job and only goes up, and a DELETE or a timeout ends a running job
within 2 s whatever stage it is in.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.service_media import DAVIS_FRAMES, davis_frames, encode_video, gradient_rgb
from service.jobs import STAGES, ProgressMeter
from service.video import VideoLimits, decode_frames
from training.flow import TRAINING_FLOW_SIZE

#: How long a running job may take to stop after a DELETE or its timeout.
STOP_BUDGET_S = 2.0


def _shifting_frames(count: int) -> list[np.ndarray]:
    """``count`` frames of a square moving right: something for flow and adaptation to see."""
    return [np.roll(gradient_rgb(64, 48), 2 * i, axis=1) for i in range(count)]


def _decoding_reports(path: Path, stride: int, max_frames: int) -> list[tuple[int, int]]:
    reports: list[tuple[int, int]] = []
    decode_frames(path, VideoLimits(300, 60.0, 1920), stride, max_frames, lambda done, total: reports.append((done, total)))
    return reports


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "libx264"), (".webm", "libvpx-vp9"), (".avi", "mpeg4")])
def test_decoding_total_is_the_frames_the_job_will_decode(tmp_path, suffix: str, codec: str) -> None:
    """13 frames: stride 2 keeps ceil(13 / 2) = 7 of them, from the frame count (mp4, avi) or duration x fps (webm)."""
    video = encode_video(_shifting_frames(13), tmp_path / f"clip{suffix}", codec=codec)
    reports = _decoding_reports(video, stride=2, max_frames=300)
    assert reports == [(done, math.ceil(13 / 2)) for done in range(8)]
    assert _decoding_reports(video, stride=2, max_frames=4) == [(done, 4) for done in range(5)]  # the limit is lower
    assert _decoding_reports(video, stride=1, max_frames=300)[-1] == (13, 13)


def test_decoding_total_of_a_header_that_promises_more_comes_down_to_what_was_there(tmp_path, monkeypatch) -> None:
    """A container whose header overstates its length: the total is never below what is done, and ends equal to it."""
    import service.video

    video = encode_video(_shifting_frames(5), tmp_path / "clip.mp4")
    monkeypatch.setattr(service.video, "expected_frames", lambda *args: 9)
    reports = _decoding_reports(video, stride=1, max_frames=300)
    assert reports[:-1] == [(done, 9) for done in range(6)] and reports[-1] == (5, 5)
    monkeypatch.setattr(service.video, "expected_frames", lambda *args: 3)  # one that understates it
    assert _decoding_reports(video, stride=1, max_frames=300) == [(0, 3), (1, 3), (2, 3), (3, 3), (4, 4), (5, 5)]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_percent_weighs_the_stages_that_run_and_the_eta_waits_for_signal() -> None:
    from service.jobs import STAGE_SECONDS

    clock = FakeClock()
    meter = ProgressMeter(steps=0, frames=300, clock=clock)
    decoded = meter.measure("decoding", 50, 50)  # 50 frames, not the limit of 300
    share = STAGE_SECONDS["decoding"] / (STAGE_SECONDS["decoding"] + STAGE_SECONDS["segmenting"] + STAGE_SECONDS["encoding"])
    assert decoded.percent == math.floor(1000 * share) / 10  # no flow nor adapting at 0 steps
    assert decoded.eta_s is None  # no time has passed: no estimate
    clock.now += 10
    halfway = meter.measure("segmenting", 25, 50)
    assert decoded.percent < halfway.percent < 100
    assert halfway.eta_s == pytest.approx(10 * (100 - halfway.percent) / halfway.percent, abs=0.05)
    assert meter.measure("encoding", 50, 50).percent == 100.0
    with pytest.raises(ValueError):
        meter.measure("flow", 1, 10)  # not a stage of a job without adaptation


def test_every_report_of_a_job_has_real_totals_and_a_rising_percent(service_settings, tmp_path) -> None:
    """All reports of a real run: decoding counts to ceil(n / stride), the percent never falls and ends at 100."""
    from service.jobs import VideoJobRequest, WorkerConfig, run_video_job

    video = encode_video(_shifting_frames(11), tmp_path / "clip.mp4")
    limits = VideoLimits(service_settings.max_video_frames, 60.0, 1920)
    request = VideoJobRequest(video_path=str(video), steps=3, stride=2, max_frames=30, limits=limits)
    reports = []
    result = run_video_job(request, WorkerConfig.from_settings(service_settings), reports.append, lambda: False)
    assert result["frames"] == 6
    assert [r.stage for r in reports] == sorted((r.stage for r in reports), key=STAGES.index)  # stages in order
    assert {r.stage for r in reports} == set(STAGES)
    totals = {r.stage: r.total for r in reports}
    pairs = sum(6 - abs(gap) for gap in (-2, -1, 1, 2))
    assert totals == {"decoding": 6, "flow": pairs, "adapting": 3, "segmenting": 6, "encoding": 6}
    assert all(0 <= r.current <= r.total for r in reports)
    percents = [r.percent for r in reports]
    assert percents == sorted(percents) and percents[0] == 0.0 and percents[-1] == 100.0
    assert len(set(percents)) > len(STAGES)  # it moves within stages, not only between them


def test_job_status_reports_percent_to_100(client, tmp_path) -> None:
    video = encode_video(_shifting_frames(8), tmp_path / "clip.mp4").read_bytes()
    job = client.post("/adapt-and-segment?steps=2", files={"file": ("clip.mp4", video)}).json()
    seen = [job["progress"]]

    def ended(status: dict) -> bool:
        seen.append(status["progress"])
        return status["state"] not in {"queued", "running"}

    status = _poll_until(client, job["url"], ended, 120, interval=0.01)
    assert status["state"] == "succeeded", status
    assert {k: v for k, v in status["progress"].items() if k != "eta_s"} == {
        "stage": "encoding", "current": 8, "total": 8, "percent": 100.0}
    percents = [p["percent"] for p in seen]
    assert percents == sorted(percents) and percents[0] == 0.0


# ---------------------------------------------------------------- stopping within the budget

def davis_video_bytes(tmp_path: Path, count: int) -> bytes:
    """An H.264 MP4 of the first ``count`` DAVIS "bear" frames (skips where the dataset is absent)."""
    if not (DAVIS_FRAMES / "bear").is_dir():
        pytest.skip(f"DAVIS frames not found under {DAVIS_FRAMES}")
    return encode_video(davis_frames("bear", count), tmp_path / "bear.mp4").read_bytes()


def _poll_until(client, url: str, done, timeout: float, interval: float = 0.05) -> dict:
    """Poll ``url`` until ``done(status)``; fails after ``timeout`` seconds with the last status."""
    deadline = time.monotonic() + timeout
    while not done(status := client.get(url).json()):
        assert time.monotonic() < deadline, f"gave up waiting after {timeout} s: {status}"
        time.sleep(interval)
    return status


def cancel_in_stage(client, url: str, stage: str) -> tuple[float, dict]:
    """Wait for ``stage``, DELETE the job; returns the seconds from the DELETE to ``cancelled`` and that status."""
    running = _poll_until(client, url, lambda s: s["progress"]["stage"] == stage or s["state"] not in {"queued", "running"}, 300)
    assert running["state"] == "running", running
    asked = time.monotonic()
    client.delete(url)
    status = _poll_until(client, url, lambda s: s["state"] != "running", 60, interval=0.02)
    return time.monotonic() - asked, status


#: (stage, frames, steps): flow lasts seconds on 60 frames (234 pairs at SLOW_FLOW_SIZE); adapting on
#: thousands of steps.
LONG_STAGES = [("flow", 60, 1), ("adapting", 8, 4000)]
#: Flow at the training resolution rather than the tiny test model's grid (the DIS default), where
#: 234 pairs would take well under a second and a cancel or timeout test could miss the stage.
SLOW_FLOW_SIZE = TRAINING_FLOW_SIZE


@pytest.mark.parametrize(("stage", "frames", "steps"), LONG_STAGES)
def test_cancel_stops_a_running_job_within_two_seconds(service_settings, tmp_path, stage: str, frames: int, steps: int) -> None:
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    settings = service_settings.model_copy(update={"max_video_frames": frames, "max_adaptation_steps": steps,
                                                   "flow_size": SLOW_FLOW_SIZE})
    video = davis_video_bytes(tmp_path, frames)
    with TestClient(create_app(settings)) as client:
        url = client.post(f"/adapt-and-segment?steps={steps}", files={"file": ("bear.mp4", video)}).json()["url"]
        latency, status = cancel_in_stage(client, url, stage)
    assert status["state"] == "cancelled", status
    assert status["progress"]["stage"] == stage, "the stage ended before the cancel: the test proves nothing"
    assert latency < STOP_BUDGET_S, f"cancelled {latency:.2f} s after the DELETE, in stage {stage}"


def test_cancel_polls_reach_the_backend_at_most_every_interval_and_a_cancel_sticks() -> None:
    """The adaptation polls ~100 times a step; a Redis backend must not see a round trip for each."""
    from service.jobs import throttled

    clock, asked, answer = FakeClock(), [], [False]

    def backend() -> bool:
        asked.append(clock.now)
        return answer[0]

    poll = throttled(backend, interval_s=0.1, clock=clock)
    assert not any(poll() for _ in range(500)) and len(asked) == 1  # 500 polls in no time: one question
    clock.now += 0.05
    answer[0] = True
    assert not poll() and len(asked) == 1  # within the interval: the old answer
    clock.now += 0.06
    assert poll() and len(asked) == 2  # the cancel is seen once an interval has passed since the last question
    answer[0] = False
    clock.now += 1.0
    assert poll() and len(asked) == 2  # and stays seen without asking again


def test_timeout_stops_a_job_in_flow_within_two_seconds(service_settings, tmp_path) -> None:
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    settings = service_settings.model_copy(update={"max_video_frames": 60, "job_timeout_seconds": 3,
                                                   "flow_size": SLOW_FLOW_SIZE})
    video = davis_video_bytes(tmp_path, 60)
    with TestClient(create_app(settings)) as client:
        url = client.post("/adapt-and-segment?steps=1", files={"file": ("bear.mp4", video)}).json()["url"]
        status = _poll_until(client, url, lambda s: s["state"] not in {"queued", "running"}, 120)
    assert status["state"] == "failed" and "timeout" in status["error"], status
    assert status["progress"]["stage"] == "flow", "the job was not in flow at its timeout: the test proves nothing"
    assert status["ended_at"] - status["started_at"] < settings.job_timeout_seconds + STOP_BUDGET_S, status
