"""Merging K regions into foreground/background (models/merging.py)."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import merging
from models.merging import (
    AFFINITY_EPSILON,
    MAX_FOREGROUND_COVERAGE,
    MIN_FOREGROUND_AREA,
    MIN_FOREGROUND_COVERAGE,
    background_group,
    border_contrast_groups,
    foreground_probability,
    framed_groups,
    is_degenerate,
    masks_at_size,
    oracle_merge,
    region_affinity,
    region_features,
    spectral_bipartition,
)


def test_region_features_are_probability_weighted_means():
    g = torch.Generator().manual_seed(0)
    probabilities = torch.rand(2, 3, 8, 12, generator=g).softmax(1)
    features = torch.randn(2, 5, 8, 12, generator=g)
    mean = region_features(probabilities, features)
    assert mean.shape == (2, 3, 5)
    b, k = 1, 2
    expected = (probabilities[b, k] * features[b]).sum((-2, -1)) / probabilities[b, k].sum()
    torch.testing.assert_close(mean[b, k], expected)
    # coarser features: masks are area-averaged onto the feature grid
    coarse = torch.randn(2, 5, 2, 3, generator=g)
    pooled = F.adaptive_avg_pool2d(probabilities, (2, 3))
    expected = (pooled[0, 1] * coarse[0]).sum((-2, -1)) / pooled[0, 1].sum()
    torch.testing.assert_close(region_features(probabilities, coarse)[0, 1], expected)


def test_affinity_is_cosine_floored_and_symmetric():
    features = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 1.0]]])
    a = region_affinity(features)
    assert a.shape == (1, 5, 5)
    torch.testing.assert_close(a, a.transpose(1, 2))
    assert a[0, 0, 1].item() == pytest.approx(1.0)  # same direction, different norm
    floor = torch.tensor(AFFINITY_EPSILON, dtype=a.dtype).item()
    assert a[0, 0, 2].item() == floor  # orthogonal -> floor
    assert a[0, 0, 3].item() == floor  # opposite (cos = -1) -> floor, never negative
    assert a[0, 0, 4].item() == pytest.approx(2**-0.5)
    assert (a >= floor).all() and a.min().item() == floor
    random = region_affinity(torch.randn(3, 6, 16, generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(random, random.transpose(1, 2))
    assert (random >= floor).all() and (random <= 1 + 1e-6).all()


def _two_clusters(order: list[int], noise: float = 0.1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(32, generator=g), torch.randn(32, generator=g)
    base = torch.stack([a, a, b, b])[order]
    return (base + noise * torch.randn(4, 32, generator=g)).unsqueeze(0)


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [0, 2, 1, 3], [2, 0, 3, 1], [3, 2, 1, 0]])
def test_spectral_bipartition_separates_two_clusters(order):
    features = _two_clusters(order)
    groups = spectral_bipartition(region_affinity(features))[0].tolist()
    cluster = [0, 0, 1, 1]
    cluster = [cluster[i] for i in order]
    same = [[groups[i] == groups[j] for j in range(4)] for i in range(4)]
    expected = [[cluster[i] == cluster[j] for j in range(4)] for i in range(4)]
    assert same == expected


def test_spectral_bipartition_uneven_clusters_and_batch():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(16, generator=g), torch.randn(16, generator=g)
    one = torch.stack([a, a, a, b]) + 0.05 * torch.randn(4, 16, generator=g)
    two = torch.stack([b, a, b, b]) + 0.05 * torch.randn(4, 16, generator=g)
    groups = spectral_bipartition(region_affinity(torch.stack([one, two])))
    assert groups.shape == (2, 4) and groups.dtype == torch.bool
    g0, g1 = groups.tolist()
    assert g0[0] == g0[1] == g0[2] != g0[3]
    assert g1[0] == g1[2] == g1[3] != g1[1]


def test_spectral_bipartition_always_returns_two_non_empty_groups():
    g = torch.Generator().manual_seed(4)
    affinities = [torch.ones(1, 4, 4), region_affinity(torch.randn(50, 4, 8, generator=g))]
    for affinity in affinities:
        groups = spectral_bipartition(affinity)
        assert groups.any(dim=1).all() and (~groups).any(dim=1).all()


def _scene(object_region: int, k: int = 4, h: int = 32, w: int = 48):
    """Object in the centre (region ``object_region``); the other regions tile the rest of the frame,
    every one touching the border. Features: one direction for the object, another for background."""
    labels = torch.zeros(h, w, dtype=torch.long)
    background = [r for r in range(k) if r != object_region]
    labels[:, : w // 3] = background[0]
    labels[:, w // 3: 2 * w // 3] = background[1]
    labels[:, 2 * w // 3:] = background[2]
    truth = torch.zeros(h, w, dtype=torch.bool)
    truth[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = True
    labels[truth] = object_region
    logits = 8.0 * F.one_hot(labels, k).permute(2, 0, 1).float().unsqueeze(0)
    g = torch.Generator().manual_seed(object_region)
    object_feature, background_feature = torch.randn(16, generator=g), torch.randn(16, generator=g)
    features = torch.where(truth, object_feature[:, None, None], background_feature[:, None, None])
    features = features + 0.05 * torch.randn(16, h, w, generator=g)
    return logits, features.unsqueeze(0), truth


@pytest.mark.parametrize("object_region", [0, 1, 2, 3])
@pytest.mark.parametrize("flip_labels", [False, True])
@pytest.mark.parametrize("strategy", ["spectral", "border", "framed"])
def test_foreground_is_the_centre_object_whatever_the_cluster_labels(object_region, flip_labels, strategy,
                                                                     monkeypatch):
    if flip_labels:  # the eigenvector's sign is arbitrary: the rule must not depend on it
        original = merging.spectral_bipartition
        monkeypatch.setattr(merging, "spectral_bipartition", lambda affinity: ~original(affinity))
    logits, features, truth = _scene(object_region)
    soft = foreground_probability(logits, features, strategy)
    assert soft.shape == (1, *truth.shape)
    assert 0 <= soft.min() and soft.max() <= 1
    mask = soft[0] > 0.5
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.95
    # coarse features (stride 4, as the U-Net gives) lead to the same answer
    coarse = F.avg_pool2d(features, 4)
    assert ((foreground_probability(logits, coarse, strategy)[0] > 0.5) == mask).all()


def test_unknown_merge_strategy_is_refused():
    logits, features, _ = _scene(0)
    with pytest.raises(ValueError, match="unknown merge strategy 'kmeans'"):
        foreground_probability(logits, features, "kmeans")


def _one_hot_regions(labels: torch.Tensor, k: int = 4) -> torch.Tensor:
    return F.one_hot(labels, k).permute(2, 0, 1).float().unsqueeze(0)


def test_border_merge_needs_no_features_where_spectral_fails():
    """Misleading appearance: each half of the object looks like one of the two background regions,
    so spectral clustering pairs object and background regions; the border merge ignores features and
    takes the object, split over two regions, whole."""
    h, w = 32, 48
    labels = torch.zeros(h, w, dtype=torch.long)
    labels[:, w // 2:] = 1  # two background regions, both on the border
    labels[8:24, 12:24] = 2  # the object: left half region 2, right half region 3
    labels[8:24, 24:36] = 3
    probabilities = _one_hot_regions(labels)
    groups = border_contrast_groups(probabilities)
    assert groups.tolist() == [[False, False, True, True]]
    looks = torch.eye(2)[torch.tensor([0, 1, 0, 1])]  # region -> appearance: 0 ~ 2, 1 ~ 3
    features = torch.einsum("kc,bkhw->bchw", looks, probabilities)
    soft = foreground_probability(8 * probabilities, features, "border")
    truth = labels >= 2
    assert ((soft[0] > 0.5) == truth).all()
    spectral = foreground_probability(8 * probabilities, features, "spectral")[0] > 0.5
    assert (spectral & truth).sum() / (spectral | truth).sum() < 0.9


def test_border_merge_ignores_specks_below_the_minimum_area():
    h, w = 40, 60
    labels = torch.zeros(h, w, dtype=torch.long)
    labels[:, w // 2:] = 1
    labels[10:30, 8:28] = 2  # the object, off the border: 400 px, 17 % of the image
    labels[5:7, 4:6] = 3  # a 4-pixel speck near a corner, off the border too: 0.17 % of the image
    labels[:, -1] = 3  # ... and the same region's thin line on the right border
    assert (labels == 3).float().mean() < MIN_FOREGROUND_AREA
    assert border_contrast_groups(_one_hot_regions(labels)).tolist() == [[False, False, True, False]]
    # without the minimum area the speck-and-line region could not be excluded on area grounds
    labels[:, -1] = 1
    speck = border_contrast_groups(_one_hot_regions(labels), min_area=0.0)
    assert speck.tolist() == [[False, False, True, True]]  # near-tie with the object: the larger group


def test_border_merge_prefers_an_object_touching_one_border_over_the_background():
    h, w = 40, 60
    labels = torch.zeros(h, w, dtype=torch.long)
    labels[:, :20] = 1
    labels[:, 40:] = 2
    labels[15:, 22:38] = 3  # standing on the bottom border
    groups = border_contrast_groups(_one_hot_regions(labels))
    assert groups.tolist() == [[False, False, False, True]]


def _photo_with_a_split_subject() -> torch.Tensor:
    """Background: left and right halves (each owning two or three sides). The subject, standing on
    the bottom edge, split as a network trained on video splits a large one: an inner upper part
    (region 2) and a lower part owning the bottom side (region 3)."""
    h, w = 40, 60
    labels = torch.zeros(h, w, dtype=torch.long)
    labels[:, w // 2:] = 1
    labels[8:24, 16:44] = 2
    labels[24:, 16:44] = 3
    return labels


def test_framed_merge_takes_a_photo_subject_split_over_regions_whole():
    labels = _photo_with_a_split_subject()
    probabilities = _one_hot_regions(labels)
    assert border_contrast_groups(probabilities).tolist() == [[False, False, True, False]]  # the inner part only
    assert framed_groups(probabilities).tolist() == [[False, False, True, True]]
    soft = foreground_probability(8 * probabilities, torch.zeros(1, 8, 10, 15), "framed")
    assert ((soft[0] > 0.5) == (labels >= 2)).all()


def test_framed_merge_keeps_regions_owning_two_sides_as_background():
    labels = _photo_with_a_split_subject()
    labels[24:, :16] = 3  # the lower part now reaches the left edge too: it owns two sides
    assert framed_groups(_one_hot_regions(labels)).tolist() == [[False, False, True, False]]


def test_framed_merge_keeps_a_band_along_one_edge_as_background():
    """A strip of floor under the subject owns one side only, but it lies on the border more than
    anywhere else: it is not part of the subject."""
    labels = _photo_with_a_split_subject()
    labels[34:, :] = 1  # a floor band along the bottom edge, in front of the subject's lower part
    probabilities = _one_hot_regions(labels)
    floor = probabilities[:, 1:2].clone()
    floor[..., :34, :] = 0
    probabilities = torch.cat([probabilities[:, :1] + probabilities[:, 1:2] - floor, floor,
                               probabilities[:, 2:]], dim=1)  # region 1 is the band; the right half joins 0
    assert framed_groups(probabilities).tolist() == [[False, False, True, True]]


def test_framed_merge_leaves_some_background():
    """Four horizontal bands own one side (top, bottom) or none: growing would take every region,
    so the border choice stands alone."""
    labels = torch.arange(4).repeat_interleave(10)[:, None].expand(40, 60).clone()
    probabilities = _one_hot_regions(labels)
    chosen = border_contrast_groups(probabilities)
    assert not chosen.all() and (framed_groups(probabilities) == chosen).all()


def test_background_group_is_the_one_owning_the_border():
    h, w = 20, 30
    centre = torch.zeros(h, w)
    centre[5:15, 8:22] = 1
    merged = torch.stack([centre, 1 - centre]).unsqueeze(0)
    assert background_group(merged).tolist() == [1]
    assert background_group(merged.flip(1)).tolist() == [0]
    # An object touching the bottom border still loses to a background that owns three strips.
    bottom = torch.zeros(h, w)
    bottom[8:, 10:20] = 1
    merged = torch.stack([1 - bottom, bottom]).unsqueeze(0)
    assert background_group(merged).tolist() == [0]


def test_oracle_merge_picks_the_best_subset_by_brute_force():
    g = torch.Generator().manual_seed(5)
    k, h, w = 4, 12, 16
    probabilities = (3 * torch.randn(3, k, h, w, generator=g)).softmax(1)
    truth = torch.zeros(3, h, w, dtype=torch.bool)
    truth[0, 2:8, 3:10] = True
    truth[1] = probabilities[1, 1] + probabilities[1, 3] > 0.5  # exactly a subset
    truth[2, :, :5] = True
    merged = oracle_merge(probabilities, truth)
    assert merged.shape == (3, h, w)
    for b in range(3):
        best = 0.0
        for subset in product([0, 1], repeat=k):
            if not any(subset):
                continue
            candidate = (probabilities[b] * torch.tensor(subset, dtype=torch.float32)[:, None, None]).sum(0) > 0.5
            union = (candidate | truth[b]).sum().item()
            best = max(best, (candidate & truth[b]).sum().item() / union if union else 1.0)
        chosen = merged[b] > 0.5
        iou = (chosen & truth[b]).sum().item() / (chosen | truth[b]).sum().item()
        assert iou == pytest.approx(best)
    assert ((merged[1] > 0.5) == truth[1]).all()


def test_masks_at_size_upsamples_before_thresholding():
    soft = torch.tensor([[[0.9, 0.3]]])  # (1, 1, 2)
    masks = masks_at_size(soft, (3, 8))
    assert masks.shape == (1, 3, 8) and masks.dtype == torch.bool
    # bilinear (half-pixel centres) gives 0.9 0.9 0.825 0.675 0.525 0.375 0.3 0.3 -> 5 pixels above 0.5;
    # thresholding first and then up-sampling would give 4.
    assert masks[0, 0].tolist() == [True] * 5 + [False] * 3
    assert (masks == masks[:, :1]).all()
    batch = masks_at_size(torch.rand(4, 6, 10), (30, 50))
    assert batch.shape == (4, 30, 50)
    assert np.isclose(masks_at_size(torch.ones(1, 4, 4), (7, 9)).float().mean().item(), 1.0)


def _square_scene(object_value: float, rest_value: float, size=(48, 64)) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of 4 regions where region 0 has ``object_value`` on a centre square and ``rest_value``
    elsewhere, region 1 holds the remaining mass and regions 2 and 3 (almost) none; and the square."""
    h, w = size
    square = torch.zeros(h, w, dtype=torch.bool)
    square[h // 4:3 * h // 4, w // 4:3 * w // 4] = True
    region0 = torch.where(square, object_value, rest_value)
    probabilities = torch.stack([region0, 1 - region0 - 2e-6, torch.full_like(region0, 1e-6),
                                 torch.full_like(region0, 1e-6)])
    return probabilities.log()[None], square


def _iou(mask: torch.Tensor, truth: torch.Tensor) -> float:
    return float((mask & truth).sum() / (mask | truth).sum().clamp_min(1))


@pytest.mark.parametrize("strategy", ["border", "spectral", "framed"])
@pytest.mark.parametrize(
    "object_value, rest_value",
    [
        (0.45, 0.0),    # the object's region never passes 0.5: the plain merge gives an empty mask
        (0.011, 0.001),  # one region holds ~99 % everywhere: the plain merge gives the whole frame
    ],
)
def test_merge_never_returns_a_whole_frame_or_empty_mask(strategy, object_value, rest_value):
    logits, square = _square_scene(object_value, rest_value)
    features = torch.randn(1, 8, 12, 16, generator=torch.Generator().manual_seed(0))
    soft = foreground_probability(logits, features, strategy)
    mask = soft[0] > 0.5
    assert MIN_FOREGROUND_COVERAGE <= mask.float().mean() <= MAX_FOREGROUND_COVERAGE
    assert _iou(mask, square) > 0.95
    assert bool(is_degenerate(soft).any()) is False


def test_degenerate_fallback_leaves_good_merges_alone():
    logits, _ = _square_scene(0.9, 0.0)
    soft = foreground_probability(logits, torch.zeros(1, 8, 12, 16), "border")
    expected = logits.softmax(1)[0, 0]
    torch.testing.assert_close(soft[0], expected)
