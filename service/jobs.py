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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service import metrics, rle
from service.errors import BadInput
from service.settings import Settings
from service.video import VideoLimits, decode_frames

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]


class JobCancelled(Exception):
    """Raised inside a job when its cancellation predicate turns true."""


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
class AdaptationConfig:
    """What the worker decides: which weights, which device, which flow, which merge."""

    checkpoint_path: Path
    device: str
    flow_method: str
    merge: str | None = None  # None: the checkpoint's own
    flow_options: dict[str, str] = field(default_factory=dict)  # RAFT: weights file and device

    @classmethod
    def from_settings(cls, settings: Settings) -> AdaptationConfig:
        """The worker's own settings (``auto`` devices are resolved by ``training``)."""
        return cls(checkpoint_path=settings.checkpoint_path, device=settings.device, flow_method=settings.flow_method,
                   merge=settings.merge, flow_options=settings.flow_options())


class StageTimer:
    """Forwards progress and records the wall time of each stage as stages change."""

    def __init__(self, progress: ProgressFn) -> None:
        self._progress = progress
        self._stage: str | None = None
        self._since = time.perf_counter()
        self.timings: dict[str, float] = {}

    def report(self, stage: str, current: int, total: int) -> None:
        """Progress callback: ``stage`` at ``current`` of ``total``."""
        if stage != self._stage:
            self._close()
            self._stage = stage
        self._progress(stage, current, total)

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
    config: AdaptationConfig,
    progress: ProgressFn,
    should_cancel: CancelFn,
) -> dict[str, Any]:
    """Run one video job to completion; raises JobCancelled, ServiceError or anything unexpected."""
    from training.adapt import AdaptationCancelled, AdaptationSettings, adapt_and_segment  # torch-heavy: worker only

    timer = StageTimer(progress)
    path = Path(request.video_path)
    outcome = "failed"
    started = time.perf_counter()
    try:
        if not path.exists():
            raise BadInput("the uploaded video is no longer available")

        def on_frame(count: int) -> None:
            if should_cancel():
                raise JobCancelled
            timer.report("decoding", count, request.max_frames)

        video = decode_frames(path, request.limits, request.stride, request.max_frames, on_frame)
        if len(video.frames) < 2:
            raise BadInput("adaptation needs at least two frames; lower the stride or upload a longer video")
        try:
            settings = AdaptationSettings(steps=request.steps, flow_method=config.flow_method,
                                          flow_options=dict(config.flow_options))
            segmentation = adapt_and_segment(
                video.frames,
                config.checkpoint_path,
                settings,
                device=config.device,
                merge=config.merge,
                refine=request.refine,
                temporal=request.temporal,
                progress=timer.report,
                should_cancel=should_cancel,
            )
        except AdaptationCancelled as exc:
            raise JobCancelled from exc
        masks = segmentation.masks
        timer.report("encoding", 0, len(masks))
        encoded = [rle.encode(mask) for mask in masks]
        timer.report("encoding", len(masks), len(masks))
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

