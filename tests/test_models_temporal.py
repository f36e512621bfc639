"""Warping, the forward–backward check (models/video_flow.py) and temporal fusion (models/temporal.py)."""

from __future__ import annotations

import torch

from models.temporal import temporal_fuse, temporal_iou
from models.video_flow import VideoFlow, forward_backward_confidence, warp

H, W = 24, 32
GAPS = (-2, -1, 1, 2)


def _translation(dx: float, dy: float, n: int = 1) -> torch.Tensor:
    flow = torch.zeros(n, 2, H, W)
    flow[:, 0], flow[:, 1] = dx, dy
    return flow


def _moving_square_video(n: int = 8, speed: int = 1) -> tuple[torch.Tensor, VideoFlow]:
    """Masks (N, H, W) of a square moving ``speed`` px/frame to the right, and the exact flow."""
    masks = torch.zeros(n, H, W)
    for t in range(n):
        masks[t, 8:16, 4 + speed * t:12 + speed * t] = 1
    flows = torch.zeros(n, len(GAPS), H, W, 2)
    valid = torch.zeros(n, len(GAPS), dtype=torch.bool)
    for column, gap in enumerate(GAPS):
        for t in range(n):
            if 0 <= t + gap < n:
                flows[t, column, ..., 0] = speed * gap  # the whole frame moves with the square
                valid[t, column] = True
    return masks, VideoFlow(flows, valid, GAPS)


def test_warp_samples_at_the_displaced_position():
    values = torch.arange(H * W, dtype=torch.float).view(1, 1, H, W)
    warped, inside = warp(values, _translation(3, 2))
    torch.testing.assert_close(warped[0, 0, :H - 2, :W - 3], values[0, 0, 2:, 3:])
    assert inside[0, 0, :H - 2, :W - 3].all() and not inside[0, 0, -1, -1] and not inside[0, 0, :, -1].any()


def test_forward_backward_check_accepts_round_trips_and_rejects_the_rest():
    forward = _translation(4, -1)
    consistent = forward_backward_confidence(forward, _translation(-4, 1))
    assert consistent[0, 0, 2:, :W - 5].all()
    assert not consistent[0, 0, :, -1].any()  # leaves the frame
    assert not forward_backward_confidence(forward, torch.zeros_like(forward)).any()  # no way back
    noise = torch.randn(1, 2, H, W, generator=torch.Generator().manual_seed(0)) * 5
    assert forward_backward_confidence(noise, torch.randn(1, 2, H, W) * 5).float().mean() < 0.2


def test_video_flow_confidence_checks_each_gap_against_its_opposite():
    _, flow = _moving_square_video()
    confidence = flow.confidence()
    assert confidence.shape == (8, len(GAPS), H, W)
    column = GAPS.index(1)
    assert confidence[0, column, :, :W - 2].all() and not confidence[0, column, :, -1].any()
    broken = flow.flows.clone()
    broken[3, GAPS.index(-1)] *= -1  # frame 3's way back to frame 2 now points the wrong way
    confidence = VideoFlow(broken, flow.valid, GAPS).confidence()
    assert not confidence[2, column, :, 4:W - 4].any()
    assert confidence[1, column, :, :W - 2].all()


def test_temporal_fusion_restores_a_dropped_frame_and_keeps_agreeing_ones():
    masks, flow = _moving_square_video()
    flickering = masks.clone()
    flickering[4] = 0
    fused = temporal_fuse(flickering, flow)
    assert ((fused[4] > 0.5) == masks[4].bool()).all()
    interior = (slice(None), slice(8, 16), slice(8, 14))  # pixels every neighbour sees inside the frame
    torch.testing.assert_close(fused[1][interior[1:]], masks[1][interior[1:]])
    assert temporal_iou(fused > 0.5, flow).min() > 0.99


def test_temporal_iou_is_one_for_steady_masks_and_drops_on_flicker():
    masks, flow = _moving_square_video()
    steady = temporal_iou(masks, flow)
    assert steady.shape == (7,) and steady.min() > 0.99
    flickering = masks.clone()
    flickering[4] = 0
    assert temporal_iou(flickering, flow).mean() < steady.mean() - 0.2
