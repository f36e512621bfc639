"""The video job: decode, adapt a copy of the network on the video, segment every frame.

This module knows nothing about queues. Backends call :func:`run_video_job`
with a progress callback and a cancellation predicate, and store what it
returns (JSON-serialisable: per-frame COCO RLE masks plus timings). The
uploaded video is left where it is: only the backend knows whether this was
the job's last attempt (RQ retries a job that raised unexpectedly), so the
backend deletes it when the job will not run again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service import metrics, rle
from service.errors import BadInput, ServiceError
from service.schemas import JobProgress
from service.settings import Settings
from service.video import VideoLimits, decode_frames

logger = logging.getLogger(__name__)

#: The stages of a video job in the order they run; adapting only when it adapts (steps > 0), flow
#: then or for temporal fusion.
STAGES = ("decoding", "flow", "adapting", "segmenting", "encoding")
#: Expected seconds of each stage per unit of its work: per frame of the video, except adapting (per
#: step). Only their ratios matter: they weigh each stage's share of the job's one percentage, so that
#: it moves at a steady pace across stages instead of restarting at each. Measured with the shipped
#: model and the default settings on the 2-core development CPU (2026-12-03): the 12 val-dev videos
#: as 854x480 H.264 uploads through the embedded server took, per video, decoding ~0.004 s a frame,
#: flow 0.034-0.036 s a frame (dis-fine at the network's grid, 4 gaps), adapting 0.19-0.23 s a step
#: (then batch 8 at half size, with the safeguard's checks; batch 16 since, 1.7x that per step in
#: bench/bench_adapt.py, hence 0.35), segmenting (the networks, channels-last, and
#: the appearance check's pass of the original) ~0.037 s a frame and encoding (each full-size mask
#: made, refined and RLE encoded as it is stored) ~0.014 s a frame (``python bench/bench_video_jobs.py``,
#: the job's ``timings``). RAFT flow (GWM_FLOW_METHOD=raft on a CPU, at 240x427) is ~20x slower than
#: this, and the percent then lags during flow.
STAGE_SECONDS = {"decoding": 0.004, "flow": 0.035, "adapting": 0.35, "segmenting": 0.04, "encoding": 0.015}
#: No ETA before this much of the job's time has passed and this share of it is done: an estimate from
#: the first frames decoded is noise.
ETA_MIN_ELAPSED_S = 2.0
ETA_MIN_PERCENT = 2.0


JobProgressCallback = Callable[[JobProgress], None]
CancelFn = Callable[[], bool]


#: How often a job asks its backend whether it was cancelled, at most. The adaptation polls before every
#: layer and at every gradient (training/adapt.py), ~100 times a step, and a Redis backend answers each
#: poll with a round trip; a tenth of a second keeps cancels well inside the 2 s the service promises.
CANCEL_POLL_INTERVAL_S = 0.1


def throttled(should_cancel: CancelFn, interval_s: float = CANCEL_POLL_INTERVAL_S,
              clock: Callable[[], float] = time.monotonic) -> CancelFn:
    """``should_cancel`` asked at most once per ``interval_s``; once it says yes, the answer stays yes."""
    asked_at = -math.inf
    cancelled = False

    def poll() -> bool:
        nonlocal asked_at, cancelled
        now = clock()
        if not cancelled and now - asked_at >= interval_s:
            asked_at = now
            cancelled = should_cancel()
        return cancelled

    return poll


class JobCancelled(Exception):
    """Raised inside a job when its cancellation predicate turns true."""


class JobTimedOut(ServiceError):
    """Raised inside a job that ran past its timeout: a failure with a message, final (never retried)."""


@dataclass(frozen=True)
class VideoJobRequest:
    """What the API decided for one upload; plain data so RQ can pickle it."""

    video_path: str
    steps: int
    stride: int
    max_frames: int
    limits: VideoLimits
    result_format: str = "zip"
    refine: bool = False  # snap masks to frame edges (models/refinement.py)
    temporal: bool = False  # fuse each frame's mask with its neighbours' along the flow (models/temporal.py)

    def discard_upload(self) -> None:
        """Delete the uploaded video: the job will not run again."""
        Path(self.video_path).unlink(missing_ok=True)

    def options(self) -> dict[str, Any]:
        """The user-visible options, echoed in the job status."""
        return {
            "steps": self.steps,
            "stride": self.stride,
            "max_frames": self.max_frames,
            "format": self.result_format,
            "refine": self.refine,
            "temporal": self.temporal,
        }


@dataclass(frozen=True)
class WorkerConfig:
    """What the worker decides, from its own settings rather than the request: which weights, which
    device, which flow, which merge. (How adaptation itself runs is training.adapt.AdaptationSettings.)"""

    checkpoint_path: Path
    device: str
    flow_method: str
    flow_size: tuple[int, int] | None  # see Settings.flow_size
    adaptation_interpolation: float  # see Settings.adaptation_interpolation
    adaptation_runs: int  # see Settings.adaptation_runs
    adaptation_seed: int  # see Settings.adaptation_seed
    adaptation_appearance_check: bool  # see Settings.adaptation_appearance_check
    adaptation_component_check: bool  # see Settings.adaptation_component_check
    adaptation_motion_check: bool  # see Settings.adaptation_motion_check
    adaptation_steadiness_check: bool  # see Settings.adaptation_steadiness_check
    merge: str | None = None  # None: the checkpoint's own
    flow_options: dict[str, str] = field(default_factory=dict)  # RAFT: weights file and device
    timeout_seconds: float | None = None  # a job running longer stops within 2 s and fails (JobTimedOut)

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerConfig:
        """The worker's own settings (``auto`` devices are resolved by ``training``)."""
        return cls(checkpoint_path=settings.checkpoint_path, device=settings.device, flow_method=settings.flow_method,
                   flow_size=settings.flow_size, merge=settings.merge, flow_options=settings.flow_options(),
                   adaptation_interpolation=settings.adaptation_interpolation,
                   adaptation_runs=settings.adaptation_runs,
                   adaptation_seed=settings.adaptation_seed,
                   adaptation_appearance_check=settings.adaptation_appearance_check,
                   adaptation_component_check=settings.adaptation_component_check,
                   adaptation_motion_check=settings.adaptation_motion_check,
                   adaptation_steadiness_check=settings.adaptation_steadiness_check,
                   timeout_seconds=settings.job_timeout_seconds)


class ProgressMeter:
    """Turns a stage's ``(current, total)`` into the percentage of the whole job and an ETA.

    The job's plan is its stages (adapting only with steps, flow with steps or ``flow``), the frame
    count (the frame limit until decoding has counted the frames) and the steps; each stage is
    expected to take :data:`STAGE_SECONDS` per unit of it.
    """

    def __init__(self, steps: int, frames: int, clock: Callable[[], float] = time.monotonic,
                 flow: bool = False) -> None:
        runs_flow = steps > 0 or flow
        self._stages = [stage for stage in STAGES
                        if (stage != "adapting" or steps > 0) and (stage != "flow" or runs_flow)]
        self._steps = steps
        self._frames = frames
        self._clock = clock
        self._started = clock()
        self._percent = 0.0

    def measure(self, stage: str, current: int, total: int) -> JobProgress:
        """Progress of ``stage`` at ``current`` of ``total``; raises ValueError for a stage not in the plan."""
        if stage == "decoding":
            self._frames = max(total, 1)  # the frames the job will decode; final once decoding ends
        index = self._stages.index(stage)
        seconds = [self._expected_seconds(name) for name in self._stages]
        within = min(current / total, 1.0) if total > 0 else 0.0
        done = sum(seconds[:index]) + seconds[index] * within
        # floored to 0.1 so that 100 means done; the epsilon keeps a finished job's float sum of the
        # weights (0.99999...) from flooring to 99.9
        self._percent = max(self._percent, math.floor(1000 * done / sum(seconds) + 1e-9) / 10)
        elapsed = self._clock() - self._started
        eta = None
        if elapsed >= ETA_MIN_ELAPSED_S and self._percent >= ETA_MIN_PERCENT:
            eta = round(elapsed * (100 - self._percent) / self._percent, 1)
        return JobProgress(stage=stage, current=current, total=total, percent=self._percent, eta_s=eta)

    def _expected_seconds(self, stage: str) -> float:
        if stage == "adapting":
            return self._steps * STAGE_SECONDS[stage]
        return self._frames * STAGE_SECONDS[stage]


class StageTimer:
    """Forwards progress, with the job's percentage, and records the wall time of each stage as stages change."""

    def __init__(self, progress: JobProgressCallback, meter: ProgressMeter) -> None:
        self._progress = progress
        self._meter = meter
        self._stage: str | None = None
        self._since = time.perf_counter()
        self.timings: dict[str, float] = {}

    def report(self, stage: str, current: int, total: int) -> None:
        """Progress callback: ``stage`` at ``current`` of ``total``."""
        if stage != self._stage:
            self._close()
            self._stage = stage
        self._progress(self._meter.measure(stage, current, total))

    def finish(self) -> dict[str, float]:
        """Close the running stage and return seconds per stage."""
        self._close()
        self._stage = None
        return self.timings

    def _close(self) -> None:
        now = time.perf_counter()
        if self._stage is not None:
            self.timings[self._stage] = round(self.timings.get(self._stage, 0.0) + now - self._since, 4)
        self._since = now


def run_video_job(
    request: VideoJobRequest,
    config: WorkerConfig,
    progress: JobProgressCallback,
    should_cancel: CancelFn,
) -> dict[str, Any]:
    """Run one video job to completion; raises JobCancelled, ServiceError (JobTimedOut past
    ``config.timeout_seconds``) or anything unexpected."""
    from training.adapt import AdaptationCancelled, AdaptationSettings, adapt_and_segment  # torch-heavy: worker only

    started = time.perf_counter()
    deadline = math.inf if config.timeout_seconds is None else started + config.timeout_seconds
    backend_cancelled = throttled(should_cancel)  # the backend is asked at most every 0.1 s

    def cancel_requested() -> bool:  # what the adaptation polls: a cancel or the timeout
        return time.perf_counter() > deadline or backend_cancelled()

    def stop() -> Exception:
        if time.perf_counter() > deadline:
            return JobTimedOut(f"job exceeded its {config.timeout_seconds:g} s timeout")
        return JobCancelled()

    timer = StageTimer(progress, ProgressMeter(request.steps, request.max_frames, flow=request.temporal))
    path = Path(request.video_path)
    outcome = "failed"

    def check_cancel() -> None:
        if cancel_requested():
            raise stop()

    try:
        if not path.exists():
            raise BadInput("the uploaded video is no longer available")

        def on_frame(done: int, total: int) -> None:
            check_cancel()
            timer.report("decoding", done, total)

        video = decode_frames(path, request.limits, request.stride, request.max_frames, on_frame)
        if len(video.frames) < 2 and request.steps > 0:
            raise BadInput("adaptation needs at least two frames; lower the stride, upload a longer video or "
                           "ask for steps=0")
        try:
            settings = AdaptationSettings(steps=request.steps, flow_method=config.flow_method,
                                          flow_options=dict(config.flow_options), flow_size=config.flow_size,
                                          interpolation=config.adaptation_interpolation,
                                          runs=config.adaptation_runs, seed=config.adaptation_seed,
                                          appearance_check=config.adaptation_appearance_check,
                                          component_check=config.adaptation_component_check,
                                          motion_check=config.adaptation_motion_check,
                                          steadiness_check=config.adaptation_steadiness_check)
            segmentation = adapt_and_segment(
                video.frames,
                config.checkpoint_path,
                settings,
                device=config.device,
                merge=config.merge,
                refine=request.refine,
                temporal=request.temporal,
                progress=timer.report,
                should_cancel=cancel_requested,
            )
        except AdaptationCancelled as exc:
            raise stop() from exc
        total = len(video.frames)
        timer.report("encoding", 0, total)
        encoded = []
        # Each full-size mask is made (refined, with refine) as it is encoded, one held at a time; 300
        # masks of 1920x1080 take seconds: a cancel must not wait for all of them.
        for mask in segmentation.masks:
            check_cancel()
            encoded.append(rle.encode(mask))
            timer.report("encoding", len(encoded), total)
        height, width = video.frames[0].shape[:2]
        outcome = "succeeded"
        return {
            "frames": len(encoded),
            "width": width,
            "height": height,
            "fps": video.fps,
            "frame_indices": video.indices,
            "masks": encoded,
            # kept or reverted by the safeguard, with the held-out losses (training/adapt.py); None at 0 steps
            "adaptation": segmentation.adaptation.to_dict() if segmentation.adaptation else None,
            "timings": timer.finish(),
        }
    except JobCancelled:
        outcome = "cancelled"
        raise
    finally:
        metrics.observe_job(outcome, time.perf_counter() - started, timer.finish())
        logger.info("video job on %s ended: %s", path.name, outcome)

