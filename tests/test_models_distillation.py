"""The self-training loss (models/distillation.py): a teacher's mask taught to K soft regions."""

from __future__ import annotations

from itertools import product

import pytest
import torch

from models.distillation import best_subsets, informative, subset_distillation_loss
from models.merging import foreground_probability


def _quadrant_regions(h: int = 16, w: int = 24, sharpness: float = 8.0) -> torch.Tensor:
    """Four soft regions (1, 4, h, w), one per image quadrant: top-left, top-right, bottom-left, bottom-right."""
    logits = torch.zeros(1, 4, h, w)
    for k, (rows, cols) in enumerate(product((slice(0, h // 2), slice(h // 2, h)), (slice(0, w // 2), slice(w // 2, w)))):
        logits[0, k, rows, cols] = sharpness
    return logits.softmax(dim=1)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a & b).sum() / (a | b).sum()).item()


def test_best_subset_is_the_union_that_matches_the_teacher_best():
    probabilities = _quadrant_regions()
    teacher = torch.zeros(1, 1, 16, 24)
    teacher[..., :, :12] = 1.0  # the left half: top-left and bottom-left quadrants
    teacher[..., 0, 12] = 1.0  # a stray pixel does not change the choice
    assert best_subsets(probabilities, teacher).tolist() == [[1.0, 0.0, 1.0, 0.0]]
    # against every proper subset, brute force
    hard = probabilities > 0.5
    scores = {}
    for subset in product((0, 1), repeat=4):
        if 0 < sum(subset) < 4:
            union = hard[0, [k for k in range(4) if subset[k]]].any(dim=0)
            scores[subset] = _iou(union, teacher[0, 0] > 0.5)
    assert max(scores, key=scores.get) == (1, 0, 1, 0)


def test_the_loss_teaches_free_regions_the_teachers_mask():
    """Gradient descent on the loss alone turns four random soft regions into a partition one of
    whose unions is the teacher's off-centre square."""
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 24, 32, requires_grad=True)
    teacher = torch.zeros(1, 1, 24, 32)
    teacher[..., 6:15, 18:28] = 1.0
    optimiser = torch.optim.Adam([logits], lr=0.1)
    start = subset_distillation_loss(logits.softmax(dim=1), teacher).item()
    for _ in range(150):
        loss = subset_distillation_loss(logits.softmax(dim=1), teacher)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    probabilities = logits.detach().softmax(dim=1)
    union = torch.einsum("bk,bkhw->bhw", best_subsets(probabilities, teacher), probabilities) > 0.5
    assert loss.item() < 0.1 * start
    assert _iou(union[0], teacher[0, 0] > 0.5) > 0.95


def test_uninformative_teachers_are_left_out():
    probabilities = _quadrant_regions().expand(3, -1, -1, -1).clone().requires_grad_(True)
    teacher = torch.zeros(3, 1, 16, 24)
    teacher[1] = 1.0  # the whole frame
    teacher[2, :, :, :12] = 1.0  # half of it: the only informative one
    assert informative(teacher).tolist() == [False, False, True]
    loss = subset_distillation_loss(probabilities, teacher)
    assert loss.item() == pytest.approx(subset_distillation_loss(probabilities[2:], teacher[2:]).item())
    nothing = subset_distillation_loss(probabilities[:2], teacher[:2])
    nothing.backward()  # zero, and still part of the graph
    assert nothing.item() == 0.0 and probabilities.grad is not None


@pytest.mark.parametrize("seed", range(4))
def test_taught_to_the_merges_choice_too_the_merge_serves_the_teachers_mask(seed):
    """With ``regions="both"`` what the label-free border merge returns becomes the teacher's square."""
    torch.manual_seed(seed)
    logits = torch.randn(1, 4, 24, 32, requires_grad=True)
    teacher = torch.zeros(1, 1, 24, 32)
    teacher[..., 6:15, 18:28] = 1.0
    optimiser = torch.optim.Adam([logits], lr=0.1)
    for _ in range(150):
        loss = subset_distillation_loss(logits.softmax(dim=1), teacher, regions="both", merge="border")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    served = foreground_probability(logits.detach(), torch.zeros(1, 1, 24, 32), "border") > 0.5
    assert _iou(served[0], teacher[0, 0] > 0.5) > 0.95
    with pytest.raises(ValueError, match="features"):
        subset_distillation_loss(logits.softmax(dim=1), teacher, regions="both", merge="spectral")
    with pytest.raises(ValueError, match="regions"):
        subset_distillation_loss(logits.softmax(dim=1), teacher, regions="merge")
