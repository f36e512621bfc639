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

#: Frames fitted at once: the fit's largest intermediate is (frames, 2, h·w, 2·gaps) doubles, 59 MB for
#: 32 frames of 128×224 with 4 gaps.
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
    # only frames that grew, where the original found something and that have a neighbour's flow:
    # fitting the others would change nothing, or have nothing to go by
    judged = grown.flatten(1).any(dim=1) & (original > 0.5).flatten(1).any(dim=1) & flow.valid.any(dim=1)
    result = adapted.clone()
    frames = torch.nonzero(judged).flatten()
    for start in range(0, len(frames), CHUNK):
        index = frames[start:start + CHUNK]
        residuals, background_level = _background_and_foreground_residuals(original[index], flow, index, model)
        for i, frame in enumerate(index.tolist()):
            held = _moving_like_background(grown[frame], residuals[i], float(background_level[i]))
            result[frame] = hold_back(adapted[frame], original[frame], held)
    return result


def _background_and_foreground_residuals(
    original: torch.Tensor, flow: VideoFlow, frames: torch.Tensor, model: MotionModel | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """For the original's soft foreground (M, h, w) of ``frames``: the squared residuals (M, 2, h, w) of
    the background's and the foreground's motion model, summed over the neighbours, and the
    background's own mean residual (M,). The flows to every neighbour are one fit's channels (a
    missing neighbour's are zero, and add nothing)."""
    m, h, w = original.shape
    foreground = original.flatten(1)
    weights = torch.stack((1 - foreground, foreground), dim=1)  # (M, 2, h·w): background, foreground
    valid = flow.valid[frames][:, :, None, None, None]
    vectors = torch.where(valid, flow.flows[frames].float(), 0.0)  # (M, G, h, w, 2)
    vectors = vectors.permute(0, 2, 3, 1, 4).reshape(m, h * w, -1)  # (M, h·w, 2G)
    basis = coordinate_basis(h, w, model)
    residuals = motion_residuals(vectors, basis, fit_motion(weights, vectors, basis))  # (M, 2, h·w)
    level = (residuals[:, 0] * weights[:, 0]).sum(1) / weights[:, 0].sum(1).clamp_min(1e-12)
    return residuals.reshape(m, 2, h, w), level


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
