"""The appearance check of adapted masks: adaptation may not grow the foreground into background colours.

Test-time adaptation learns from the flow, and the flow of a video moves more than the object: a
swan's wake, a car's shadow, the smoke of a drifting car move with it, and the motion model explains
them best as part of the moving region. Adaptation grows the foreground into them while its flow loss
improves, so no check on that flow can object (blackswan: held-out loss 0.31 → 0.24, J −19). Their
colours, though, are the background's — water, road, smoke over road — and the network *before*
adaptation, which learned from many videos, had left them out.

The rule, with nothing tuned: from the soft foreground of the original network over all the video's
frames, the foreground's and the background's colour histograms (CIELAB, :data:`BINS` per channel,
each pixel weighted by its probability; :class:`ColourHistograms`); a pixel whose colour is more
frequent in the background than in the foreground is *background-like*, and there adaptation may
lower the foreground probability but not raise it. Elsewhere — colours the original foreground owns
— adaptation adds what the flow shows, and it may remove foreground anywhere. Measured on the 12 val-dev uploads (README, Benchmarks).
No I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

__all__ = ["BINS", "ColourHistograms", "colour_indices", "hold_back", "restrict_growth"]

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


@dataclass
class ColourHistograms:
    """Soft-weighted colour counts of one video's foreground and background, pooled over its frames.

    Pooled, not per frame: a 128×224 frame whose object covers a tenth of it spreads ~3 000 pixels over
    512 colours, so a frame's own foreground histogram is sparse, and in a frame where the original
    network missed the object it says nothing about the object's colours at all. The object and the
    scene keep their colours across a video, so every frame's counts estimate the same two histograms.
    On the 12 val-dev uploads, three runs of steps each, the check with the video's histograms gained
    more than with each frame's at both upload sizes (README, Benchmarks).
    """

    foreground: torch.Tensor  # (bins³,) float64
    background: torch.Tensor

    @classmethod
    def empty(cls, bins: int = BINS) -> ColourHistograms:
        return cls(torch.zeros(bins ** 3, dtype=torch.float64), torch.zeros(bins ** 3, dtype=torch.float64))

    @classmethod
    def of(cls, indices: torch.Tensor, soft: torch.Tensor, bins: int = BINS) -> ColourHistograms:
        """The histograms of the frames ``indices`` (N, h, w) under the soft foreground ``soft`` (N, h, w)."""
        histograms = cls.empty(bins)
        histograms.add(indices, soft)
        return histograms

    def add(self, indices: torch.Tensor, soft: torch.Tensor) -> None:
        """Count more frames: ``indices`` from :func:`colour_indices`, ``soft`` their soft foreground."""
        flat, weights = indices.flatten(), soft.double().flatten()
        self.foreground += torch.bincount(flat, weights, self.foreground.numel())
        self.background += torch.bincount(flat, 1.0 - weights, self.background.numel())

    def background_like(self, indices: torch.Tensor) -> torch.Tensor:
        """Pixels of ``indices`` whose colour is more frequent in the background than in the foreground,
        each histogram normalised to sum to one."""
        foreground = self.foreground / self.foreground.sum().clamp_min(1e-12)
        background = self.background / self.background.sum().clamp_min(1e-12)
        return background[indices] > foreground[indices]


def restrict_growth(adapted: torch.Tensor, original: torch.Tensor, indices: torch.Tensor,
                    histograms: ColourHistograms | None = None) -> torch.Tensor:
    """The adapted soft foreground (N, h, w), held at the original one wherever it would rise on a
    background-like pixel (see the module docstring). ``histograms``: the video's, from the original's
    masks of all its frames; None counts the ``N`` frames given."""
    if histograms is None:
        histograms = ColourHistograms.of(indices, original)
    return hold_back(adapted, original, histograms.background_like(indices))


def hold_back(adapted: torch.Tensor, original: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """The adapted soft foreground, no higher than the original one on the pixels ``where``: what both
    checks of adapted masks do (this one and models/connectivity.py), so that they mean the same by it."""
    return torch.where(where, torch.minimum(adapted, original), adapted)
