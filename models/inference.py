"""Inference: how a frame becomes a mask, in one place.

network → soft regions (N, K, h, w) → merged soft foreground (N, h, w) at the network's input size
→ after test-time adaptation, optionally held where it would grow into background colours
(models/appearance.py), on components the original network's foreground does not touch
(models/connectivity.py) and where what it grew moves like the background (models/motion_check.py),
and replaced by the original network's masks if it flickers along the flow (models/steadiness.py)
→ optionally fused with its neighbours along the flow (models/temporal.py)
→ a boolean mask at each frame's own size, optionally snapped to the frame's edges
(models/refinement.py).

Evaluation (training/evaluate.py), the video job (training/adapt.py, which ``POST /adapt-and-segment``
and ``gwm segment`` run) and the benches call :func:`predict` and :func:`segment_frames`; the ONNX
path of ``POST /segment`` (service/inference.py) runs only its network elsewhere and shares the rest:
:func:`~models.merging.foreground_probability`, :func:`masks_at_sizes` and :func:`region_scores`.
No I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .appearance import ColourHistograms, colour_indices, restrict_growth
from .connectivity import restrict_to_anchored_components
from .merge_strategy import PAPER_MERGE
from .merging import foreground_probability
from .motion_check import restrict_to_independent_motion
from .preprocessing import prepare_image
from .refinement import foreground_mask, refinement_guide
from .steadiness import Steadiness, measure_steadiness
from .temporal import temporal_fuse
from .video_flow import VideoFlow

if TYPE_CHECKING:
    from .segmenters import Segmenter

__all__ = ["SegmentedFrames", "masks_at_sizes", "predict", "region_scores", "segment_frames"]


@dataclass
class SegmentedFrames:
    """What :func:`segment_frames` returns: an iterator of the full-size masks, one per ``next`` and
    only once, and what the steadiness check measured (None when it did not run)."""

    masks: Iterator[np.ndarray]
    steadiness: Steadiness | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.masks

    def __next__(self) -> np.ndarray:
        return next(self.masks)

    @property
    def reverted(self) -> bool:
        """Whether the steadiness check replaced the adapted masks by the original network's."""
        return self.steadiness is not None and not self.steadiness.steady


@torch.inference_mode()
def predict(
    model: Segmenter,
    images: Sequence[np.ndarray],
    input_size: Sequence[int],
    device: torch.device | str = "cpu",
    merge: str = PAPER_MERGE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Region probabilities (N, K, H, W) and soft merged foreground (N, H, W) at the input size."""
    logits, features = model.forward_with_features(_network_input(images, input_size, device))
    return logits.float().softmax(dim=1).cpu(), foreground_probability(logits, features, merge).cpu()


def _network_input(images: Sequence[np.ndarray], input_size: Sequence[int], device: torch.device | str) -> torch.Tensor:
    return torch.from_numpy(np.stack([prepare_image(image, input_size) for image in images])).to(device)


@torch.inference_mode()
def _foreground(model: Segmenter, batch: torch.Tensor, merge: str) -> torch.Tensor:
    logits, features = model.forward_with_features(batch)
    return foreground_probability(logits, features, merge).cpu()


def masks_at_sizes(
    soft: torch.Tensor | Sequence[torch.Tensor],
    sizes: Iterable[tuple[int, int]],
    guides: Iterable[np.ndarray | None] | None = None,
) -> Iterator[np.ndarray]:
    """One boolean mask per soft foreground in ``soft`` ((N, h, w), or N of (h, w) each on its own
    grid), at its (height, width) in ``sizes``.

    Lazily, one full-size mask at a time. ``guides`` (one per mask, from
    :func:`models.refinement.refinement_guide`, or None for a mask left as it is) snap each mask to
    its image's edges; a generator of them keeps one guide alive at a time.
    """
    for one, size, guide in zip(soft, sizes, itertools.repeat(None) if guides is None else guides):
        yield foreground_mask(one, size, guide=guide)


def segment_frames(
    model: Segmenter,
    frames: Sequence[np.ndarray],
    input_size: tuple[int, int],
    device: torch.device,
    merge: str,
    refine: bool = False,
    *,
    flow: VideoFlow | None = None,
    temporal: bool = False,
    original: Segmenter | None = None,
    appearance_check: bool = True,
    component_check: bool = True,
    motion_check: bool = True,
    steadiness_check: bool = True,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
    check_cancel: Callable[[], None] | None = None,
) -> SegmentedFrames:
    """One boolean mask per frame at its own resolution. ``flow`` is the video's (on the input grid):
    with ``temporal``, soft masks are fused with their neighbours' along it first (models/temporal.py).
    With ``original`` (the network ``model`` was adapted from), the foreground may not grow into
    colours the original's masks give to the background (``appearance_check``, models/appearance.py),
    nor keep components the original's foreground does not touch (``component_check``,
    models/connectivity.py), nor keep what it grew where that moves like the original's background
    by ``flow`` (``motion_check``, models/motion_check.py); the checks act in that order, before the
    temporal fusion, and with none asked ``original`` is not run. Last, with ``steadiness_check``, the
    checked masks are replaced by the original's if they flicker along ``flow`` more than it allows
    (models/steadiness.py; the result says so).

    The networks run now, on every frame; the full-size masks come lazily, one per ``next``, from
    the iterator returned: 300 masks of a 1080p video take 0.6 GB, and a caller that encodes each
    as it comes never holds more than one. ``progress`` is called as (frames done, frames) before
    the first batch and after each; ``check_cancel`` before each batch and each full-size mask, and
    raises to stop.
    """
    if (temporal or (original is not None and (motion_check or steadiness_check))) and flow is None:
        raise ValueError("temporal fusion, the motion check and the steadiness check need the video's flow")
    if not (appearance_check or component_check or motion_check or steadiness_check):
        original = None  # nothing to check against it
    soft_masks = []
    # per batch: the original's soft masks, and the colours for the appearance check (None without it)
    originals: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    histograms = ColourHistograms.empty()  # the original's colours over the whole video (models/appearance.py)
    if progress is not None:
        progress(0, len(frames))
    for start in range(0, len(frames), batch_size):
        if check_cancel is not None:
            check_cancel()
        batch = frames[start:start + batch_size]
        network_input = _network_input(batch, input_size, device)  # once, for both networks
        soft_masks.append(_foreground(model, network_input, merge))
        if original is not None:
            before, colours = _foreground(original, network_input, merge), None
            if appearance_check:
                colours = colour_indices(batch, input_size)
                histograms.add(colours, before)
                colours = colours.short()
            originals.append((before, colours))
        if progress is not None:
            progress(min(start + batch_size, len(frames)), len(frames))
    if original is not None:  # the appearance check needs every frame's colours counted first
        soft_masks = [_checked(soft, before, colours, histograms, component_check)
                      for soft, (before, colours) in zip(soft_masks, originals)]
    soft = torch.cat(soft_masks)
    steadiness = None
    if original is not None:
        before = torch.cat([before for before, _ in originals])
        if motion_check:
            soft = restrict_to_independent_motion(soft, before, flow)
        if steadiness_check:
            steadiness = measure_steadiness(soft, before, flow)
            if steadiness is not None and not steadiness.steady:
                soft = before
    if temporal:
        soft = temporal_fuse(soft, flow)
    return SegmentedFrames(_full_size_masks(soft, frames, refine, check_cancel), steadiness)


def _checked(adapted: torch.Tensor, original: torch.Tensor, colours: torch.Tensor | None,
             histograms: ColourHistograms, component_check: bool) -> torch.Tensor:
    """A batch of adapted soft masks after the checks asked for: the appearance check where
    ``colours`` are given, first, so that the components are those of the foreground it allows."""
    if colours is not None:
        adapted = restrict_growth(adapted, original, colours.long(), histograms)
    if component_check:
        adapted = restrict_to_anchored_components(adapted, original)
    return adapted


def _full_size_masks(soft: torch.Tensor, frames: Sequence[np.ndarray], refine: bool,
                     check_cancel: Callable[[], None] | None) -> Iterator[np.ndarray]:
    guides = (refinement_guide(frame) for frame in frames) if refine else None
    masks = masks_at_sizes(soft, [frame.shape[:2] for frame in frames], guides)
    while True:
        if check_cancel is not None:  # full-size masks (guided filter included) take seconds for a long video
            check_cancel()
        mask = next(masks, None)
        if mask is None:
            return
        yield mask


def region_scores(logits: torch.Tensor, soft: torch.Tensor) -> list[dict[str, float]]:
    """Per region of one image's logits (K, H, W): its share of the image and how much of it is
    foreground by the soft mask (H, W) (both soft, in [0, 1])."""
    probabilities = logits.float().softmax(dim=0)  # (K, H, W)
    mass = probabilities.sum(dim=(1, 2))
    foreground = (probabilities * soft).sum(dim=(1, 2)) / mass.clamp_min(1e-12)
    area = mass / soft.numel()
    return [
        {"region": k, "area": round(float(area[k]), 6), "foreground": round(float(foreground[k]), 6)}
        for k in range(probabilities.shape[0])
    ]
