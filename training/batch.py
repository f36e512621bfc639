"""One training batch: what the network sees, the flow its regions must explain, and the per-pixel maps
that travel with that flow.

Sampling (training/data.py) and augmentation (training/augment.py) move a batch through resizes, flips,
zoom crops and pastes. Every geometric change of the flow grid must happen to the trust and teacher maps
too, or a mask ends up on the wrong pixels; :meth:`Batch.with_maps` is the one place that applies it to
whichever maps a batch carries, each with its own interpolation (trust is a yes/no per vector, a teacher
mask is soft).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["Batch", "MapOperation", "rescale_grid", "rescale_images"]

#: A change applied to one per-pixel map (B, 1, h, w): it receives the map and the interpolation mode
#: that suits it ("nearest" or "bilinear") and returns the changed map.
MapOperation = Callable[[torch.Tensor, str], torch.Tensor]

#: How each optional per-pixel map is resampled.
_MAP_MODES = {"confidence": "nearest", "teacher": "bilinear"}


@dataclass(frozen=True)
class Batch:
    """Network input (B, 3, H, W), the matching flow (B, 2, h, w), optionally how far each flow vector
    is trusted (B, 1, h, w) in [0, 1] (models/motion.py ``confidence``) and optionally a teacher's soft
    foreground mask (B, 1, h, w) (training/pseudo_labels.py).

    The flow is in the pixels of its own grid while it is augmented, and in reference units (480×854
    pixels, training/data.py ``to_reference_units``) once the dataset hands the batch to the loss."""

    images: torch.Tensor
    flows: torch.Tensor
    confidence: torch.Tensor | None = None
    teacher: torch.Tensor | None = None

    def with_maps(self, operation: MapOperation, **changes: Any) -> Batch:
        """A copy with ``changes`` (new images and/or flows) and ``operation`` applied to each
        per-pixel map the batch carries."""
        for name, mode in _MAP_MODES.items():
            value = getattr(self, name)
            if value is not None:
                changes[name] = operation(value, mode)
        return dataclasses.replace(self, **changes)

    def rescaled(self, scale: float) -> Batch:
        """The same batch at ``scale`` × its resolution (images antialiased, flow and maps nearest).

        Flow stays in reference units, so the loss keeps its scale across resolutions.
        """
        return self.with_maps(lambda values, _: rescale_grid(values, scale),
                              images=rescale_images(self.images, scale), flows=rescale_grid(self.flows, scale))


def rescale_images(images: torch.Tensor, scale: float) -> torch.Tensor:
    """Network inputs (B, 3, H, W) at ``scale`` × their size, antialiased."""
    size = [round(s * scale) for s in images.shape[-2:]]
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


def rescale_grid(values: torch.Tensor, scale: float) -> torch.Tensor:
    """Flow in reference units or per-pixel maps (B, C, h, w) at ``scale`` × their grid, nearest: the
    values themselves do not change."""
    return F.interpolate(values, size=[round(s * scale) for s in values.shape[-2:]], mode="nearest")
