"""The component check of adapted masks: adaptation may reshape what the original network found, not
add objects it did not see.

Test-time adaptation learns from one video's flow, and a few steps on it can switch on a region far
from the object — a patch of road, a bush in the wind, a compression artefact that moved — which the
appearance check (models/appearance.py) lets through when its colours are the object's. The network
before adaptation, trained on many videos, had found the object somewhere in the frame; what
adaptation does well is to move that mask's borders (legs, a rider, the rest of a car).

The rule, with nothing tuned: in each frame, the adapted foreground's 8-connected components (above
0.5, on the network's grid) that share no pixel with the original network's foreground (above 0.5)
are held at the original's probability, which there is at most 0.5; components that touch it stay
as the adapted network drew them, however far they now reach. Two frames have nothing to anchor by:
one where the original found nothing keeps its adapted mask (adaptation found what the original
missed), and one where no adapted component touches what the original found gets the original's
mask (the two networks disagree entirely, and holding every component back would leave the frame
empty). Measured on the 12 val-dev uploads (README, Benchmarks). No I/O.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .appearance import hold_back

__all__ = ["restrict_to_anchored_components"]


def restrict_to_anchored_components(adapted: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """The adapted soft foreground (N, h, w), held at the original one (N, h, w) on each of its
    foreground components that does not touch the original's foreground (see the module docstring)."""
    if adapted.ndim != 3 or adapted.shape != original.shape:
        raise ValueError(f"adapted masks {tuple(adapted.shape)} and original ones {tuple(original.shape)} "
                         "differ or are not (N, h, w)")
    if not len(adapted):
        return adapted.clone()
    return torch.stack([_check_frame(a, o.to(adapted.dtype)) for a, o in zip(adapted, original)])


def _check_frame(adapted: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    found, adapted_found = original > 0.5, adapted > 0.5
    if not found.any():
        return adapted
    _, labels = cv2.connectedComponents(adapted_found.cpu().numpy().astype(np.uint8), connectivity=8)
    labels = torch.from_numpy(labels).to(adapted.device)
    anchored = labels[found & adapted_found].unique()
    if not len(anchored):
        return original
    return hold_back(adapted, original, adapted_found & ~torch.isin(labels, anchored))
