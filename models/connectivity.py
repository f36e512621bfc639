"""The component check of adapted masks: adaptation may reshape what the original network found, not
add objects it did not see.

Test-time adaptation learns from one video's flow, and a few steps on it can switch on a region far
from the object — a patch of road, a bush in the wind, a compression artefact that moved — which the
appearance check (models/appearance.py) lets through when its colours are the object's. The network
before adaptation, trained on many videos, had found the object somewhere in the frame; what
adaptation does well is to move that mask's borders (legs, a rider, the rest of a car).

The rule, with nothing tuned: in each frame, the adapted foreground's 8-connected components (at the
0.5 level, on the network's grid) that share no pixel with the original network's foreground are
held at the original's probability, which there is below 0.5; components that touch it stay as the
adapted network drew them, however far they now reach. A frame where the original found nothing has
nothing to anchor to and keeps its adapted mask. Measured on the 12 val-dev uploads (README,
Benchmarks). No I/O.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

__all__ = ["restrict_to_anchored_components"]


def restrict_to_anchored_components(adapted: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """The adapted soft foreground (N, h, w), held at the original one (N, h, w) on each of its
    foreground components that does not touch the original's foreground (see the module docstring)."""
    if adapted.shape != original.shape:
        raise ValueError(f"adapted masks {tuple(adapted.shape)} and original ones {tuple(original.shape)} differ")
    detached = torch.stack([_detached_components(a.numpy(), o.numpy())
                            for a, o in zip(adapted.float() > 0.5, original.float() > 0.5)])
    return torch.where(detached, torch.minimum(adapted, original), adapted)


def _detached_components(adapted: np.ndarray, original: np.ndarray) -> torch.Tensor:
    """Pixels of the boolean mask ``adapted`` whose 8-connected component shares none with ``original``."""
    if not original.any():
        return torch.zeros(adapted.shape, dtype=torch.bool)
    _, labels = cv2.connectedComponents(adapted.astype(np.uint8), connectivity=8)
    anchored = np.unique(labels[original & adapted])
    return torch.from_numpy(adapted & ~np.isin(labels, anchored))
