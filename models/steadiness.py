"""The steadiness check of adapted masks: adaptation may not make a video's masks flicker along its own flow.

An object persists from one frame to the next: frame t + 1's mask, carried back to frame t along the
flow, covers frame t's. The network before adaptation, trained on many videos, segments each frame
alone, and its masks already flicker somewhat (1 − the mean IoU of consecutive warped masks: 0.10–0.30
on the val-dev uploads). Twenty steps on one video's flow can teach it something that is no object —
a swan's wake, a spreading V of waves that is new in every frame, moving unlike the still water and
attached to the swan, so that the held-out flow loss and the appearance, component and motion checks
all let it through — and then its masks jump between frames (blackswan at 427×240: flicker 0.12 →
0.43, J 65 → 48), where an adaptation that found more of the object leaves them as steady or
steadier (car-roundabout 0.18 → 0.11).

The rule: on the network's grid, after the other checks and before any temporal fusion, the adapted
masks (above 0.5) may flicker at most ``FLICKER_FACTOR`` = 2 times as much as the original network's
— adaptation may add at most as much flicker as the masks had — else the video is segmented with the
original network's masks. The factor is a round number, not fitted: on the val-dev uploads the
adaptations that gained J raised flicker by at most 1.7×, the wake by 2.4–3.5× (README, Benchmarks).
No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .temporal import temporal_iou
from .video_flow import VideoFlow

__all__ = ["FLICKER_FACTOR", "Steadiness", "flicker", "measure_steadiness"]

#: How many times the original masks' flicker the adapted ones may reach.
FLICKER_FACTOR = 2.0


@dataclass(frozen=True)
class Steadiness:
    """The flicker (1 − mean temporal IoU, on the network's grid) of the original and adapted masks."""

    original_flicker: float
    adapted_flicker: float

    @property
    def steady(self) -> bool:
        """Whether the adapted masks may be used: at most ``FLICKER_FACTOR`` × the original's flicker."""
        return self.adapted_flicker <= FLICKER_FACTOR * self.original_flicker


def flicker(soft: torch.Tensor, flow: VideoFlow) -> float:
    """1 − the mean IoU of each frame's mask (``soft`` (N, h, w) above 0.5) with the next one's warped
    back along ``flow`` (models/temporal.py)."""
    return 1.0 - float(temporal_iou(soft > 0.5, flow).mean())


def measure_steadiness(adapted: torch.Tensor, original: torch.Tensor, flow: VideoFlow) -> Steadiness | None:
    """The flicker of the adapted and original soft masks (N, h, w) by ``flow`` (on the same grid);
    None where nothing can be measured: a flow without the next frame's (gap 1), or one frame."""
    if adapted.shape != original.shape or adapted.ndim != 3:
        raise ValueError(f"adapted masks {tuple(adapted.shape)} and original ones {tuple(original.shape)} "
                         "differ or are not (N, h, w)")
    if 1 not in flow.gaps or not flow.valid[:, flow.gaps.index(1)].any():
        return None
    return Steadiness(original_flicker=flicker(original, flow), adapted_flicker=flicker(adapted, flow))
