"""The motion check of adapted masks: where adaptation grows the foreground, what it adds must not move
like the background.

"Guess what moves": the foreground is what the background's motion does not explain. Test-time
adaptation learns from one video's flow, and a few steps on it can give the object a region of the
scene that merely moves differently from the far background — a row of parked scooters close to a
panning camera (parallax), a stretch of road — and which touches the object, so the component check
(models/connectivity.py) keeps it, in the object's colours, so the appearance check
(models/appearance.py) keeps it too. The flow the job already computed tells such a region apart.

The rule, with nothing tuned. In each frame, on the network's grid, the original network's soft
foreground o and background 1 − o each get the paper's motion model (quadratic, fitted in closed
form, weights p: models/motion.py) on the flow to every neighbour the job computed; each pixel gets
its squared residual under either model, summed over those neighbours. The adapted foreground's
growth — pixels above 0.5 where the original is not — is split into 8-connected components, and a
component is held at the original's probability when, on average over it, the background's model
explains its flow

- at least as well as the foreground's model does, and
- at least as well as it explains the background itself (the background's mean residual).

Both conditions must hold: a limb swinging away from the torso fits the foreground's quadratic model
badly, yet it moves unlike the background, so it stays. Frames where the original found nothing, or
that have no neighbour's flow, are left as they are. Measured on the 12 val-dev uploads (README,
Benchmarks). No I/O.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .appearance import hold_back
from .motion import MotionModel, coordinate_basis, fit_motion, motion_residuals
from .video_flow import VideoFlow

__all__ = ["restrict_to_independent_motion"]

#: Frames fitted at once: the fit's weighted basis is (frames, 2, h·w, 6) doubles, 88 MB for 32 frames
#: of 128×224.
CHUNK = 32


def restrict_to_independent_motion(adapted: torch.Tensor, original: torch.Tensor, flow: VideoFlow,
                                   model: MotionModel | str = MotionModel.QUADRATIC) -> torch.Tensor:
    """The adapted soft foreground (N, h, w), held at the original one (N, h, w) on each component of
    its growth that moves like the original's background by ``flow`` (on the same grid; see the module
    docstring)."""
    if adapted.ndim != 3 or adapted.shape != original.shape:
        raise ValueError(f"adapted masks {tuple(adapted.shape)} and original ones {tuple(original.shape)} "
                         "differ or are not (N, h, w)")
    if flow.flows.shape[0] != adapted.shape[0] or flow.flows.shape[2:4] != adapted.shape[1:]:
        raise ValueError(f"flow {tuple(flow.flows.shape)} does not match the masks {tuple(adapted.shape)}")
    original = original.to(adapted.dtype)
    grown = (adapted > 0.5) & (original <= 0.5)
    # only frames that grew and where the original found something: fitting the others would change nothing
    to_judge = grown.flatten(1).any(dim=1) & (original > 0.5).flatten(1).any(dim=1)
    residuals, background_level = _background_and_foreground_residuals(original, flow, to_judge, model)
    result = adapted.clone()
    for frame in range(len(adapted)):
        if background_level[frame] is None:
            continue
        held = _moving_like_background(grown[frame], residuals[frame], background_level[frame])
        result[frame] = hold_back(adapted[frame], original[frame], held)
    return result


def _background_and_foreground_residuals(
    original: torch.Tensor, flow: VideoFlow, to_judge: torch.Tensor, model: MotionModel | str
) -> tuple[torch.Tensor, list[float | None]]:
    """Per frame of ``to_judge`` (N,) with a neighbour's flow: the squared residuals (2, h, w) of the
    background's and the foreground's motion model, summed over the neighbours, and the background's
    own mean residual (None for the other frames: nothing to judge, or nothing to judge by)."""
    n, h, w = original.shape
    basis = coordinate_basis(h, w, model)
    residuals = torch.zeros(n, 2, h * w)
    level = torch.zeros(n, dtype=torch.float64)
    judged = torch.zeros(n, dtype=torch.bool)
    for column in range(len(flow.gaps)):
        frames, vectors = flow.pair(column, torch.nonzero(flow.valid[:, column] & to_judge).flatten())
        for start in range(0, len(frames), CHUNK):
            index = frames[start:start + CHUNK]
            foreground = original[index].flatten(1)
            weights = torch.stack((1 - foreground, foreground), dim=1)  # (M, 2, h·w): background, foreground
            vectors_ = vectors[start:start + CHUNK].flatten(2).transpose(1, 2)  # (M, h·w, 2)
            residual = motion_residuals(vectors_, basis, fit_motion(weights, vectors_, basis))
            residuals[index] += residual
            level[index] += ((residual[:, 0] * weights[:, 0]).sum(1) / weights[:, 0].sum(1).clamp_min(1e-12)).double()
            judged[index] = True
    levels = [float(value) if ok else None for value, ok in zip(level, judged)]
    return residuals.reshape(n, 2, h, w), levels


def _moving_like_background(grown: torch.Tensor, residuals: torch.Tensor, background_level: float) -> torch.Tensor:
    """The pixels of ``grown`` (h, w) in components whose mean background residual is no larger than
    their mean foreground residual nor than ``background_level``."""
    if not grown.any():
        return grown
    count, labels = cv2.connectedComponents(grown.cpu().numpy().astype(np.uint8), connectivity=8)
    labels = torch.from_numpy(labels).long().flatten()
    pixels = torch.bincount(labels, minlength=count).clamp_min(1).double()
    background = torch.bincount(labels, residuals[0].flatten().double(), minlength=count) / pixels
    foreground = torch.bincount(labels, residuals[1].flatten().double(), minlength=count) / pixels
    like_background = (background <= foreground) & (background <= background_level)
    return like_background[labels].reshape(grown.shape) & grown  # label 0 is everything that did not grow
