"""A video's optical flow between neighbouring frames: warping along it, and the forward–backward
check of which vectors to trust.

Flow is (B, 2, H, W) in pixels of its own grid, channels (u, v): pixel x of frame t moves to
x + F(x) in frame t + g. Warping frame t + g's values "back" to frame t samples them at x + F(x).

The forward–backward check (Sundaram, Brox & Keutzer, ECCV 2010, also used by UnFlow and ARFlow)
marks a vector as unreliable when going t → t+g and back again does not return near the start:

    |F(x) + B(x + F(x))|² < α (|F(x)|² + |B(x + F(x))|²) + β

Occluded pixels (no true correspondence), flow smeared over flat or compressed regions and
vectors leaving the frame fail it. gwm gives those pixels zero weight in the motion fit and its
loss (models/motion.py ``confidence``), so the network is not taught to explain noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["FB_ALPHA", "FB_BETA", "VideoFlow", "forward_backward_confidence", "warp"]

#: Sundaram et al.'s constants: a tolerance growing with the motion, plus a floor in pixels².
FB_ALPHA = 0.01
FB_BETA = 0.5


def _sampling_grid(flow: torch.Tensor) -> torch.Tensor:
    """Normalised sampling positions x + F(x) for ``grid_sample`` (align_corners=False), (B, H, W, 2)."""
    _, _, h, w = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    px = x + flow[:, 0]
    py = y + flow[:, 1]
    return torch.stack(((px + 0.5) / w * 2 - 1, (py + 0.5) / h * 2 - 1), dim=-1)


def warp(values: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``values`` (B, C, H, W) at x + ``flow``(x), bilinearly.

    Returns the warped values and a (B, 1, H, W) boolean of the positions that land inside the
    frame (outside, the values are the nearest border's and mean nothing).
    """
    if values.shape[0] != flow.shape[0] or values.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"values {tuple(values.shape)} and flow {tuple(flow.shape)} must share batch and grid")
    grid = _sampling_grid(flow.float())
    warped = F.grid_sample(values.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    inside = (grid.abs() <= 1).all(dim=-1).unsqueeze(1)
    return warped.to(values.dtype), inside


def forward_backward_confidence(
    forward: torch.Tensor,
    backward: torch.Tensor,
    alpha: float = FB_ALPHA,
    beta: float = FB_BETA,
) -> torch.Tensor:
    """Which forward vectors (B, 2, H, W) survive the round trip through ``backward`` (flow of the
    other frame back to this one, same grid): a (B, 1, H, W) boolean."""
    returned, inside = warp(backward, forward)
    forward = forward.float()
    returned = returned.float()
    mismatch = (forward + returned).pow(2).sum(dim=1, keepdim=True)
    tolerance = alpha * (forward.pow(2).sum(dim=1, keepdim=True) + returned.pow(2).sum(dim=1, keepdim=True)) + beta
    return (mismatch < tolerance) & inside


@dataclass(frozen=True)
class VideoFlow:
    """Flow of every frame of one video (or of many, concatenated) to its neighbours at each gap.

    Args:
        flows: (N, G, H, W, 2) flow of frame i to frame i + gaps[j], in pixels of the H×W grid;
            zeros where that neighbour does not exist.
        valid: (N, G) booleans, whether frame i + gaps[j] exists (for concatenated videos: within
            the same video).
        gaps: the G frame offsets, e.g. the paper's (−2, −1, 1, 2).
    """

    flows: torch.Tensor
    valid: torch.Tensor
    gaps: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.flows.shape[:2] != self.valid.shape or self.flows.shape[1] != len(self.gaps):
            raise ValueError(f"flows {tuple(self.flows.shape)}, valid {tuple(self.valid.shape)} and "
                             f"gaps {self.gaps} do not agree")

    def pair(self, column: int, frames: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames with a neighbour at ``gaps[column]`` (or the given subset of them) and their flow
        as (M, 2, H, W) float."""
        if frames is None:
            frames = torch.nonzero(self.valid[:, column]).flatten()
        return frames, self.flows[frames, column].permute(0, 3, 1, 2).float()

    def confidence(self, alpha: float = FB_ALPHA, beta: float = FB_BETA, chunk: int = 256) -> torch.Tensor:
        """(N, G, H, W) booleans: forward–backward consistent vectors. Where the opposite gap was
        not computed there is nothing to check against, and every vector counts as trusted."""
        n, g, h, w, _ = self.flows.shape
        result = torch.ones(n, g, h, w, dtype=torch.bool)
        for column, gap in enumerate(self.gaps):
            if -gap not in self.gaps:
                continue
            back_column = self.gaps.index(-gap)
            frames = torch.nonzero(self.valid[:, column]).flatten()
            for start in range(0, len(frames), chunk):
                index, forward = self.pair(column, frames[start:start + chunk])
                _, backward = self.pair(back_column, index + gap)
                result[index, column] = forward_backward_confidence(forward, backward, alpha, beta)[:, 0]
        return result
