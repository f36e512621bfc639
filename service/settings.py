"""Service configuration, read from the environment (prefix ``GWM_``).

One object carries every limit so the API, the job function and the worker
agree on them; the worker reads its own environment, which lets a GPU worker
run with ``GWM_DEVICE=cuda`` while the API stays on CPU.
"""

from __future__ import annotations

import getpass
import os
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.merge_strategy import PHOTO_MERGE, MergeStrategy
from training.flow import DEFAULT_FLOW_METHOD, FLOW_METHODS

_REPO_ROOT = Path(__file__).resolve().parents[1]
_WEIGHTS = _REPO_ROOT / "models" / "weights"

#: Bounds of GWM_FLOW_SIZE's sides (pixels).
MIN_FLOW_SIDE, MAX_FLOW_SIDE = 32, 1920

#: Where models run: ``auto`` takes CUDA when it is available.
Device = Literal["auto", "cpu", "cuda"]


def _default_data_dir() -> Path:
    """``$TMPDIR/gwm-service-<user>``: one per user, so no one reads or sweeps another user's uploads."""
    return Path(tempfile.gettempdir()) / f"gwm-service-{getpass.getuser()}"


class Settings(BaseSettings):
    """All tunables of the service; see README for the environment variable names."""

    model_config = SettingsConfigDict(env_prefix="GWM_", extra="ignore")

    model_path: Path = Field(_WEIGHTS / "gwm-default.onnx", description="ONNX model used by /segment.")
    checkpoint_path: Path = Field(_WEIGHTS / "gwm-default.pt", description="PyTorch checkpoint adapted by video jobs.")
    device: Device = "auto"
    flow_method: str = Field(DEFAULT_FLOW_METHOD, description="Optical flow method passed to training.adapt.")
    raft_weights: Path | None = Field(
        None, description="Local RAFT weights file (official or torchvision format); needed for flow_method=raft, "
        "which is meant for GPU workers (RAFT-small costs ~0.2 s per 240p frame pair on one CPU core)."
    )
    flow_size: tuple[int, int] | None = Field(
        None, description="(height, width) video frames with more pixels are area-downscaled to before optical flow, "
        "e.g. GWM_FLOW_SIZE='[240, 427]'. None: the flow method's own (training.flow.video_flow_size): the network's "
        "input grid for DIS and Farneback (2.8-3.2x faster than 240x427 for the same J), 240x427 for RAFT."
    )
    refine: bool = Field(
        True, description="Default of the refine option: snap masks to image edges (guided filter). On because it "
        "raised zero-shot J on DAVIS val-dev (48.0 -> 48.7) and ECSSD (47.3 -> 48.7 with the framed merge) for model "
        "0.4.0, at ~15-19 ms per 854x480 image (bench/bench_refine.py)."
    )
    temporal: bool = Field(
        True, description="Default of the temporal option of video jobs: fuse each frame's soft mask with its "
        "neighbours' carried along the optical flow (models/temporal.py). On because on the 12 DAVIS val-dev videos "
        "uploaded as H.264 it raised J after 20 steps (49.9 -> 50.6 at 854x480, 49.4 -> 50.0 at 427x240) and cut "
        "flicker by 30 % (16.3 -> 11.5, bench/bench_video_jobs.py); at steps=0 it costs the +-1 flow."
    )
    merge: MergeStrategy | None = Field(
        None, description="Foreground merge strategy for video frames (models/merging.py); None: the one recorded "
        "in the model."
    )
    image_merge: MergeStrategy = Field(
        PHOTO_MERGE, description="Foreground merge strategy for still images (/segment). framed: a photo frames its "
        "subject, so regions owning two or more border sides are background and the rest join the border choice; on "
        "ECSSD it raised J of model 0.4.0 from 41.9 to 47.2 (bench/bench_merge.py). Video frames keep the model's "
        "merge: the same rule costs J there."
    )
    torch_threads: int | None = Field(
        None,
        gt=0,
        description="PyTorch threads in this process (None: PyTorch's default). The API's PyTorch work "
        "(merging) is tiny and 1 thread avoids contention with onnxruntime; workers want all cores.",
    )

    queue_mode: Literal["embedded", "redis"] = "embedded"
    redis_url: str = "redis://127.0.0.1:6379/0"
    queue_name: str = "gwm"
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Uploads waiting for a worker; must be shared with workers in redis mode.",
    )

    max_upload_bytes: int = Field(200 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(40_000_000, gt=0)
    max_images_per_request: int = Field(16, gt=0)
    max_request_pixels: int = Field(
        80_000_000, gt=0, description="Pixels of all images of one /segment request together, read from headers."
    )
    max_pixels_in_flight: int = Field(
        80_000_000,
        gt=0,
        description="Pixels all /segment requests may decode at once: memory grows with pixels, not requests.",
    )
    pixel_wait_seconds: float = Field(
        20.0, ge=0, description="How long a /segment request waits for pixels in flight to free up before a 429."
    )
    max_video_frames: int = Field(300, gt=0)
    max_video_seconds: float = Field(120.0, gt=0)
    max_video_side: int = Field(1920, gt=0, description="Longest side in pixels a video may have.")
    max_adaptation_steps: int = Field(200, ge=0)
    default_adaptation_steps: int = Field(20, ge=0)
    adaptation_interpolation: float = Field(
        0.5, gt=0, le=1,
        description="Fraction of the adaptation's change of the weights used: 0.5 segments with the midpoint of the "
                    "original and the adapted network (training/adapt.py), 1 with the adapted network (the paper).",
    )
    adaptation_runs: int = Field(
        1, ge=1, le=8,
        description="Independent runs of the adaptation steps (seeds 0, 1, ...) whose weights are averaged before the "
                    "interpolation (training/adapt.py): each run costs the steps' time again, and the average moves "
                    "less with one run's draw of frames.",
    )
    adaptation_seed: int = Field(
        0, ge=0,
        description="Seed of the adaptation's draw of frames and flips (training/adapt.py): the same upload gives the "
                    "same masks with the same seed; another seed is another draw of the steps, as a retry.",
    )
    adaptation_appearance_check: bool = Field(
        True,
        description="After adaptation, hold each frame's foreground where it would grow into colours the original "
                    "network's masks give to the background (models/appearance.py): wakes, shadows and smoke move with "
                    "the object and adaptation learns to include them.",
    )
    adaptation_component_check: bool = Field(
        True,
        description="After adaptation, hold each frame's foreground components that do not touch the original "
                    "network's foreground (models/connectivity.py): adaptation may reshape the object the original "
                    "found, not switch on a patch of the scene elsewhere.",
    )
    adaptation_motion_check: bool = Field(
        True,
        description="After adaptation, hold what each frame's foreground grew where its flow moves like the original "
                    "network's background (models/motion_check.py): scenery beside a panning camera moves unlike the "
                    "far background, and adaptation can add it to the object it touches.",
    )
    adaptation_steadiness_check: bool = Field(
        True,
        description="After adaptation and the other checks, segment with the original network's masks if the adapted "
                    "ones flicker along the video's flow more than twice as much (models/steadiness.py): a wake, new "
                    "in every frame, passes the other checks and makes the masks jump between frames.",
    )

    max_queued_jobs: int = Field(20, gt=0, description="Video jobs waiting for a worker; more get a 429.")
    max_upload_dir_bytes: int = Field(
        2 * 1024**3, gt=0, description="Bytes of uploads on disk, waiting for or read by jobs; more get a 503."
    )
    retry_after_seconds: int = Field(10, gt=0, description="Retry-After sent with 429 and 503 at a capacity limit.")

    job_ttl_seconds: int = Field(3600, gt=0, description="How long results and failed jobs are kept.")
    job_timeout_seconds: int = Field(1800, gt=0)
    job_retries: int = Field(1, ge=0, description="Retries after a worker died or a job raised unexpectedly (RQ only).")
    job_heartbeat_seconds: int = Field(
        10, gt=0, description="A running job's heartbeat period; missing 3 beats marks its worker dead (RQ only)."
    )
    maintenance_interval_seconds: float = Field(
        10.0, gt=0, description="How often jobs of dead workers are requeued or failed and orphaned files swept."
    )

    api_key: SecretStr | None = Field(None, description="If set, required in X-API-Key everywhere but health.")

    @field_validator("flow_method")
    @classmethod
    def _known_flow_method(cls, value: str) -> str:
        """Fail at start-up, not in the first video job."""
        if value not in FLOW_METHODS:
            raise ValueError(f"unknown flow method {value!r}; choose from {', '.join(sorted(FLOW_METHODS))}")
        return value

    @field_validator("flow_size")
    @classmethod
    def _flow_size_in_range(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        """Flow on a few pixels is noise, and no larger size than 1080p is worth its time."""
        if value is not None and not all(MIN_FLOW_SIDE <= side <= MAX_FLOW_SIDE for side in value):
            raise ValueError(f"GWM_FLOW_SIZE sides must be within {MIN_FLOW_SIDE}..{MAX_FLOW_SIDE}, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _raft_has_weights(self) -> Settings:
        if self.flow_method == "raft" and (self.raft_weights is None or not self.raft_weights.is_file()):
            raise ValueError("GWM_FLOW_METHOD=raft needs GWM_RAFT_WEIGHTS naming an existing RAFT weights file")
        return self

    @model_validator(mode="after")
    def _default_steps_within_the_limit(self) -> Settings:
        """Otherwise every job submitted without ``steps`` would be refused."""
        if self.default_adaptation_steps > self.max_adaptation_steps:
            raise ValueError(f"GWM_DEFAULT_ADAPTATION_STEPS={self.default_adaptation_steps} exceeds "
                             f"GWM_MAX_ADAPTATION_STEPS={self.max_adaptation_steps}")
        return self

    def flow_options(self) -> dict[str, str]:
        """Options for the flow estimator of video jobs (RAFT: its weights and the device)."""
        if self.flow_method != "raft":
            return {}
        return {"weights": str(self.raft_weights), "device": self.device}

    @cached_property
    def upload_dir(self) -> Path:
        """Directory for uploaded videos; created on first use, private to this user."""
        return self._private_subdir("uploads")

    @cached_property
    def result_dir(self) -> Path:
        """Directory for packaged results (ZIP, MP4), built on the first GET; created on first use, private."""
        return self._private_subdir("results")

    def _private_subdir(self, name: str) -> Path:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.data_dir == _default_data_dir():
            _check_private(self.data_dir)
        path = self.data_dir / name
        path.mkdir(mode=0o700, exist_ok=True)
        return path


def _check_private(path: Path) -> None:
    """The default data dir lies in the shared temporary directory, where anyone may have made it
    first: refuse one that another user owns or can enter (they could read or swap uploads)."""
    status = path.stat()
    if status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise PermissionError(f"{path} belongs to another user or is open to others (mode "
                              f"{status.st_mode & 0o777:o}); remove it or set GWM_DATA_DIR to a private directory")
