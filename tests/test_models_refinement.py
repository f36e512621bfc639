"""Edge-aware refinement (models/refinement.py): the mask moves onto the image's edges."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from models.merging import masks_at_size
from models.refinement import GUIDE_MAX_PIXELS, foreground_mask, refine_soft_mask, refinement_guide


def _scene(size=(240, 320)):
    """A bright square on a textured dark ground, and a soft mask of it that is too big, blurry and
    off-centre — what an up-sampled low-resolution prediction looks like."""
    h, w = size
    rng = np.random.default_rng(0)
    image = rng.integers(20, 60, (h, w, 3), dtype=np.uint8)
    truth = np.zeros((h, w), bool)
    truth[60:180, 100:220] = True
    image[truth] = (200, 180, 60)
    blob = np.zeros((h, w), np.float32)
    blob[52:192, 92:236] = 1.0  # 8-16 px too large, shifted
    soft = cv2.GaussianBlur(blob, (0, 0), 12)
    return image, soft, truth


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_refinement_snaps_the_mask_to_the_edges():
    image, soft, truth = _scene()
    plain = soft > 0.5
    refined = refine_soft_mask(image, soft) > 0.5
    assert _iou(refined, truth) > _iou(plain, truth) + 0.05
    assert _iou(refined, truth) > 0.8


def test_foreground_mask_without_a_guide_is_the_plain_upsampled_mask():
    soft = torch.rand(16, 28, generator=torch.Generator().manual_seed(0))
    expected = masks_at_size(soft[None], (120, 210))[0].numpy()
    np.testing.assert_array_equal(foreground_mask(soft, (120, 210)), expected)


def test_foreground_mask_with_a_guide_refines_at_the_guide_and_answers_at_size():
    image, soft, truth = _scene()
    low = torch.from_numpy(cv2.resize(soft, (80, 60), interpolation=cv2.INTER_AREA))
    mask = foreground_mask(low, truth.shape, guide=image)
    assert mask.shape == truth.shape and mask.dtype == bool
    assert _iou(mask, truth) > _iou(foreground_mask(low, truth.shape), truth)
    big = foreground_mask(low, (480, 640), guide=image)  # output larger than the guide
    assert big.shape == (480, 640)


def test_large_photos_are_refined_on_a_bounded_guide():
    image = np.zeros((3000, 4000, 3), np.uint8)
    guide = refinement_guide(image)
    assert guide.shape[0] * guide.shape[1] <= GUIDE_MAX_PIXELS
    assert abs(guide.shape[1] / guide.shape[0] - 4 / 3) < 0.01
    small = np.zeros((240, 427, 3), np.uint8)
    assert refinement_guide(small) is small
