"""Temporally steady masks: each frame's soft foreground fused with its neighbours', carried along
the optical flow the video job already computed; and the flicker measure that says whether it helps.

A network that sees one frame at a time decides each frame alone, so a region can drop in and out
of the foreground from one frame to the next. The object moves with the flow, so frame t + g's soft
foreground warped back to frame t is a second opinion on frame t. Averaging the opinions of the
neighbours whose flow passes the forward–backward check (models/video_flow.py) keeps what the
frames agree on and damps one-frame flips; where no neighbour's flow is trusted (occlusions), the
frame keeps its own prediction.
"""

from __future__ import annotations

import torch

from .video_flow import VideoFlow, warp

__all__ = ["temporal_fuse", "temporal_iou"]


def temporal_fuse(soft: torch.Tensor, flow: VideoFlow, confidence: torch.Tensor | None = None,
                  neighbour_weight: float = 1.0) -> torch.Tensor:
    """Fuse each frame's soft foreground (N, H, W) with its neighbours' warped to it.

    Args:
        soft: per-frame foreground probability on the flow's grid.
        flow: the video's flow to each neighbour (gaps), on the same grid.
        confidence: (N, G, H, W) trusted vectors (``flow.confidence()`` when None).
        neighbour_weight: weight of one neighbour's opinion relative to the frame's own.

    Returns:
        (N, H, W): ``(soft_t + w Σ_g c_g · warp(soft_{t+g})) / (1 + w Σ_g c_g)`` per pixel.
    """
    if soft.shape[0] != flow.flows.shape[0] or soft.shape[-2:] != flow.flows.shape[2:4]:
        raise ValueError(f"soft masks {tuple(soft.shape)} do not match the flow {tuple(flow.flows.shape)}")
    if confidence is None:
        confidence = flow.confidence()
    total = soft.float().clone()
    weight = torch.ones_like(total)
    for column, gap in enumerate(flow.gaps):
        frames, vectors = flow.pair(column)
        if not len(frames):
            continue
        warped, inside = warp(soft[frames + gap].float().unsqueeze(1), vectors)
        trusted = (inside[:, 0] & confidence[frames, column]).float() * neighbour_weight
        total[frames] += trusted * warped[:, 0]
        weight[frames] += trusted
    return total / weight


def temporal_iou(masks: torch.Tensor, flow: VideoFlow) -> torch.Tensor:
    """IoU of each frame's mask with the next frame's mask warped back to it, (N − 1,) or fewer.

    Measured on the pixels whose flow to the next frame lands inside the frame; a video whose
    object is segmented the same way in every frame scores near 1, a flickering one lower. Frames
    without a +1 neighbour in ``flow`` are skipped. Two empty masks score 1.
    """
    if 1 not in flow.gaps:
        raise ValueError("temporal IoU needs the flow to the next frame (gap 1)")
    frames, vectors = flow.pair(flow.gaps.index(1))
    warped, inside = warp(masks[frames + 1].float().unsqueeze(1), vectors)
    current = masks[frames].bool() & inside[:, 0]
    following = (warped[:, 0] > 0.5) & inside[:, 0]
    union = (current | following).flatten(1).sum(dim=1)
    intersection = (current & following).flatten(1).sum(dim=1)
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.ones_like(union, dtype=torch.float))
