"""The appearance check of adapted masks: adaptation may not grow the foreground into background colours.

Test-time adaptation learns from the flow, and the flow of a video moves more than the object: a
swan's wake, a car's shadow, the smoke of a drifting car move with it, and the motion model explains
them best as part of the moving region. Adaptation grows the foreground into them while its flow loss
improves, so no check on that flow can object (blackswan: held-out loss 0.31 → 0.24, J −19). Their
colours, though, are the background's — water, road, smoke over road — and the network *before*
adaptation, which learned from many videos, had left them out.

The rule, with nothing tuned: from the soft foreground of the original network, per frame, the
foreground's and the background's colour histograms (CIELAB, :data:`BINS` per channel, each pixel
weighted by its probability); a pixel whose colour is more frequent in the background than in the
foreground is *background-like*, and there adaptation may lower the foreground probability but not
raise it. Elsewhere — colours the original foreground owns — adaptation adds what the flow shows,
and it may remove foreground anywhere. Measured on the 12 val-dev uploads (README, Benchmarks).
No I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

__all__ = ["BINS", "colour_indices", "background_like", "restrict_growth"]

#: Histogram bins per CIELAB channel (8³ = 512 colours), fixed before measuring: coarse enough that
#: a 128×224 frame fills its histograms, fine enough to tell water from a swan.
BINS = 8


def colour_indices(frames: Sequence[np.ndarray], size: Sequence[int], bins: int = BINS) -> torch.Tensor:
    """Quantised CIELAB colour of every pixel (N, h, w), int64 in [0, bins³), for RGB uint8 frames
    resized bicubically to ``size`` = (h, w) (the network's input grid, as models/preprocessing.py)."""
    height, width = int(size[0]), int(size[1])
    indices = []
    for frame in frames:
        small = cv2.resize(frame, (width, height), interpolation=cv2.INTER_CUBIC)
        lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.int64) * bins // 256
        indices.append(lab[..., 0] * bins * bins + lab[..., 1] * bins + lab[..., 2])
    return torch.from_numpy(np.stack(indices))


def background_like(indices: torch.Tensor, soft: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """Pixels (N, h, w) whose colour is more frequent in the background than in the foreground of the
    soft foreground ``soft`` (N, h, w), each frame's histograms normalised to sum to one."""
    n, colours = soft.shape[0], bins ** 3
    flat = (indices + colours * torch.arange(n)[:, None, None]).flatten()
    weights = soft.double().flatten()
    foreground = torch.bincount(flat, weights, n * colours).view(n, colours)
    background = torch.bincount(flat, 1.0 - weights, n * colours).view(n, colours)
    foreground = foreground / foreground.sum(dim=1, keepdim=True).clamp_min(1e-12)
    background = background / background.sum(dim=1, keepdim=True).clamp_min(1e-12)
    per_pixel = indices.flatten(1)
    likelier_background = background.gather(1, per_pixel) > foreground.gather(1, per_pixel)
    return likelier_background.view_as(indices)


def restrict_growth(adapted: torch.Tensor, original: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The adapted soft foreground (N, h, w), held at the original one wherever it would rise on a
    background-like pixel of the original's (see the module docstring)."""
    held = background_like(indices, original)
    return torch.where(held, torch.minimum(adapted, original), adapted)
