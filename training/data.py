"""Training samples: (frame, flow) pairs from DAVIS-style folders and a flow cache.

Every frame of every sequence is one sample; at each draw one of the gaps that exist for that frame
is picked at random (paper App. A: "we sample one at random for each iteration"). Frames are prepared
once with :func:`models.preprocessing.prepare_image` — the same function the service uses — and held
in memory with the flow, so that a training step costs no disk I/O or JPEG decoding: on a 2-core
machine the network, not the loader, must be the bottleneck.

Flow is converted to the authors' reference units (pixels of a 480×854 frame) and clipped to
±``flow_clip`` (reference notes: ±20 px), so that the loss scale and the gradient-clipping threshold
mean the same thing whatever grid the flow was stored on.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.preprocessing import DEFAULT_INPUT_SIZE, prepare_image
from models.video_flow import VideoFlow

from .augment import Augmentation, augment
from .batch import Batch
from .flow import TRAINING_FLOW_SIZE, FlowEstimator
from .flow_cache import FlowCache, compute_sequence_flow
from .frames import VideoFolder

__all__ = ["REFERENCE_FLOW_SIZE", "FlowPairDataset", "to_reference_units"]


def _align_gaps(stored: Sequence[np.ndarray], gaps: Sequence[int], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Place per-gap flow arrays (N − |g| rows each) on a common frame axis: (N, G, h, w, 2), (N, G)."""
    flows = np.zeros((n, len(gaps), *stored[0].shape[1:]), np.float16)
    valid = np.zeros((n, len(gaps)), bool)
    for column, (gap, array) in enumerate(zip(gaps, stored)):
        first = max(0, -gap)
        flows[first:first + len(array), column] = array
        valid[first:first + len(array), column] = True
    return flows, valid

#: The authors compute their loss on 480×854 flow; flow magnitudes are expressed in those pixels.
REFERENCE_FLOW_SIZE: tuple[int, int] = (480, 854)


def to_reference_units(flow: torch.Tensor, clip: float | None) -> torch.Tensor:
    """Rescale flow (B, 2, h, w) in pixels of its own grid to 480×854 pixels, clipped to ±clip."""
    h, w = flow.shape[-2:]
    scale = flow.new_tensor([REFERENCE_FLOW_SIZE[1] / w, REFERENCE_FLOW_SIZE[0] / h]).view(1, 2, 1, 1)
    flow = flow * scale
    return flow.clamp(-clip, clip) if clip is not None else flow


class FlowPairDataset:
    """Frames with their flow for every gap, held in memory; build with :meth:`from_cache` (training)
    or :meth:`from_frames` (test-time adaptation on one uploaded video).

    Args:
        images: (N, 3, H, W) prepared network inputs.
        flow: each frame's flow to its neighbours at every gap, on the flow grid (h, w).
        loss_size: (h, w) grid of the loss; ``None`` keeps the flow's grid.
        flip: random horizontal flips (the flow's u component changes sign).
        flow_clip: clip in reference pixels, ``None`` to disable.
        augmentation: appearance changes, zoom crops and copy-paste of moving regions
            (training/augment.py); ``None``: none.
        trust_check: give zero weight to flow vectors that fail the forward–backward check
            (models/video_flow.py); off by default, as in the paper, which trusts every vector.
        teacher: each frame's soft teacher mask (N, 1, h, w) on the flow grid, drawn with its frame and
            moved with its flow (training/pseudo_labels.py); ``None``: none.
    """

    def __init__(
        self,
        images: torch.Tensor,
        flow: VideoFlow,
        loss_size: tuple[int, int] | None = None,
        flip: bool = True,
        flow_clip: float | None = 20.0,
        augmentation: Augmentation | None = None,
        trust_check: bool = False,
        teacher: torch.Tensor | None = None,
    ) -> None:
        if not flow.valid.any(dim=1).all():
            raise ValueError("every frame needs at least one flow field")
        if teacher is not None and tuple(teacher.shape) != (len(images), 1, *flow.flows.shape[2:4]):
            raise ValueError(f"teacher masks {tuple(teacher.shape)} do not match {len(images)} frames of flow "
                             f"on a {tuple(flow.flows.shape[2:4])} grid")
        self.teacher = teacher
        self.images, self.flow = images, flow
        self.confidence = flow.confidence() if trust_check else None
        self.loss_size = tuple(loss_size) if loss_size else tuple(flow.flows.shape[2:4])
        self.flip = flip
        self.flow_clip = flow_clip
        self.augmentation = augmentation or Augmentation()

    @classmethod
    def from_cache(
        cls,
        videos: Sequence[VideoFolder],
        cache: FlowCache,
        input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
        progress: bool = True,
        **options,
    ) -> FlowPairDataset:
        """All frames of ``videos`` with their precomputed flow (see ``gwm flow``)."""
        images, flows, valid = [], [], []
        for video in tqdm(videos, desc="loading frames", unit="seq", disable=not progress):
            n = len(video)
            images += [prepare_image(video.read(i), input_size) for i in range(n)]
            stored = [np.asarray(cache.load(video.name, gap, mmap=False), np.float16) for gap in cache.spec.gaps]
            frame_flows, frame_valid = _align_gaps(stored, cache.spec.gaps, n)
            flows.append(frame_flows)
            valid.append(frame_valid)
        flow = VideoFlow(torch.from_numpy(np.concatenate(flows)), torch.from_numpy(np.concatenate(valid)),
                         tuple(cache.spec.gaps))
        return cls(torch.from_numpy(np.stack(images)), flow, **options)

    @classmethod
    def from_frames(
        cls,
        frames: Sequence[np.ndarray],
        estimator: FlowEstimator,
        gaps: Sequence[int],
        input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
        progress: Callable[[int, int], None] | None = None,
        flow_size: tuple[int, int] | None = TRAINING_FLOW_SIZE,
        **options,
    ) -> FlowPairDataset:
        """One video's frames (RGB uint8) with flow computed now and stored on the input grid.

        Frames with more pixels than ``flow_size`` (height, width) are area-downscaled to it before
        flow estimation (what video jobs choose: :func:`~training.flow.video_flow_size`).

        ``progress`` is called before the first frame pair and after every pair as (pairs done, pairs
        in all gaps); it may raise to stop the computation between two pairs (cancellation).
        """
        n = len(frames)
        gaps = [g for g in gaps if abs(g) < n]
        if not gaps:
            raise ValueError("a video needs at least two frames to compute optical flow")
        images = np.stack([prepare_image(frame, input_size) for frame in frames])
        if flow_size is not None and frames[0].shape[0] * frames[0].shape[1] > flow_size[0] * flow_size[1]:
            frames = [cv2.resize(f, (flow_size[1], flow_size[0]), interpolation=cv2.INTER_AREA) for f in frames]
        total = sum(n - abs(g) for g in gaps)
        done = 0
        if progress is not None:
            progress(done, total)

        def on_pair() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)

        stored = [compute_sequence_flow(frames, gap, estimator, input_size, on_pair).astype(np.float16)
                  for gap in gaps]
        flows, valid = _align_gaps(stored, gaps, n)
        return cls(torch.from_numpy(images), VideoFlow(torch.from_numpy(flows), torch.from_numpy(valid), tuple(gaps)),
                   **options)

    def subset(self, frames: torch.Tensor) -> FlowPairDataset:
        """The same dataset restricted to ``frames`` (indices) as training samples.

        The flow of a kept frame still points to its neighbours in the full video, and its trust
        mask was computed against them, so nothing about the kept samples changes."""
        subset = copy.copy(self)
        subset.images = self.images[frames]
        subset.flow = VideoFlow(self.flow.flows[frames], self.flow.valid[frames], self.flow.gaps)
        subset.confidence = None if self.confidence is None else self.confidence[frames]
        subset.teacher = None if self.teacher is None else self.teacher[frames]
        return subset

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """Draw a random batch; all randomness comes from ``generator`` so runs resume exactly."""
        index = torch.randint(len(self), (batch_size,), generator=generator)
        # One valid gap per frame: random scores, invalid gaps pushed below every valid one.
        scores = torch.rand(batch_size, len(self.flow.gaps), generator=generator)
        scores = scores.masked_fill(~self.flow.valid[index], -1.0)
        gap = scores.argmax(dim=1)
        flip = torch.rand(batch_size, generator=generator) < 0.5 if self.flip else torch.zeros(batch_size, dtype=torch.bool)
        batch = Batch(images=self.images[index],
                      flows=self.flow.flows[index, gap].permute(0, 3, 1, 2).float(),  # (B, 2, h, w)
                      confidence=None if self.confidence is None else self.confidence[index, gap].unsqueeze(1).float(),
                      teacher=None if self.teacher is None else self.teacher[index].float())
        if self.loss_size != tuple(batch.flows.shape[-2:]):
            batch = _resample_flow_grid(batch, self.loss_size)
        if flip.any():
            batch = _flip(batch, flip)
        batch = augment(batch, self.augmentation, generator)
        return dataclasses.replace(batch, flows=to_reference_units(batch.flows, self.flow_clip))


def _resample_flow_grid(batch: Batch, size: tuple[int, int]) -> Batch:
    """The batch's flow and maps on the loss grid ``size``, nearest (the vectors rescaled to its pixels;
    a teacher mask bilinear, it is soft)."""
    src_h, src_w = batch.flows.shape[-2:]
    flows = F.interpolate(batch.flows, size=size, mode="nearest")
    flows = flows * flows.new_tensor([size[1] / src_w, size[0] / src_h]).view(1, 2, 1, 1)

    def resample(values: torch.Tensor, mode: str) -> torch.Tensor:
        return F.interpolate(values, size=size, mode=mode, align_corners=False if mode == "bilinear" else None)

    return batch.with_maps(resample, flows=flows)


def _flip(batch: Batch, flip: torch.Tensor) -> Batch:
    """Mirror the samples where ``flip`` (B,) is true, left to right; their flow's u component changes
    sign."""
    where = flip.view(-1, 1, 1, 1)
    mirrored = batch.flows.flip(-1)
    mirrored[:, 0] = -mirrored[:, 0]
    return batch.with_maps(lambda values, _: torch.where(where, values.flip(-1), values),
                           images=torch.where(where, batch.images.flip(-1), batch.images),
                           flows=torch.where(where, mirrored, batch.flows))
