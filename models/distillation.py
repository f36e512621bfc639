"""A second training target: a teacher's foreground mask, taught to K soft regions (self-training).

The network predicts K regions, and which of them form the foreground is decided after the fact by
a label-free merge (models/merging.py). A binary target therefore says nothing about which region
should hold the object. The loss below lets the regions keep their roles: for each image it takes the
proper subset of regions whose hard union best matches the teacher's mask (IoU, like the evaluation's
oracle merge; no gradient through the choice) and scores the soft union of that subset against the
mask with the soft Jaccard loss, 1 − Σ u·t / Σ (u + t − u·t): the metric users are served (J), and
bounded per image, so that a teacher confidently wrong on one video cannot outweigh the rest of a
batch (per-pixel cross-entropy measured up to 3.6 on such a video against 0.1–0.3 elsewhere).
Regions already carving the object are pushed to carve it better; the flow loss keeps deciding how
the rest of the frame splits.

That choice leaves the served mask to the merge, which may pick another group than the one taught
(on val-dev, a network taught this way carved the objects better, oracle J +2, while the border merge
served no better). With ``regions="both"`` the loss is the mean of that term and the same term on the
group the label-free merge picks (``border`` or ``framed``, which need no features; no gradient through
the choice either): the regions carve the object and the merge is pushed to serve it. The merge's group
alone is not offered: from unstructured regions its choice can hop from group to group as the loss
reshapes them and never settle (two of the four random starts of tests/test_models_distillation.py,
150 steps), while with the best-matching term beside it all four converge.

Images whose teacher mask is (nearly) empty or (nearly) the whole frame carry no information about an
object, and the merge never returns such masks; they are left out (see :func:`informative`).
"""

from __future__ import annotations

import torch

from .merge_strategy import MergeStrategy
from .merging import (
    MAX_FOREGROUND_COVERAGE,
    MIN_FOREGROUND_COVERAGE,
    best_matching_subsets,
    border_contrast_groups,
    framed_groups,
)

__all__ = ["DISTILLED_REGIONS", "best_subsets", "informative", "merged_subsets", "subset_distillation_loss"]

#: Which regions the teacher's mask is taught to: the best-matching subset, or that and the merge's choice.
DISTILLED_REGIONS = ("best", "both")


def informative(teacher: torch.Tensor) -> torch.Tensor:
    """Which soft teacher masks (B, 1, h, w) cover neither (nearly) nothing nor (nearly) everything: (B,)."""
    coverage = (teacher > 0.5).float().mean(dim=(-3, -2, -1))
    return (coverage >= MIN_FOREGROUND_COVERAGE) & (coverage <= MAX_FOREGROUND_COVERAGE)


@torch.no_grad()
def best_subsets(probabilities: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """For soft regions (B, K, h, w) and soft teacher masks (B, 1, h, w): the proper subset of regions
    (B, K) 0/1 whose hard union (> 0.5) has the highest IoU with the hard teacher mask (> 0.5)."""
    return best_matching_subsets(probabilities, teacher[:, 0] > 0.5)


@torch.no_grad()
def merged_subsets(probabilities: torch.Tensor, merge: MergeStrategy | str) -> torch.Tensor:
    """The regions (B, K) 0/1 that the label-free ``merge`` (``border`` or ``framed``) makes foreground."""
    merge = MergeStrategy(merge)
    if merge is MergeStrategy.BORDER:
        return border_contrast_groups(probabilities).to(probabilities.dtype)
    if merge is MergeStrategy.FRAMED:
        return framed_groups(probabilities).to(probabilities.dtype)
    raise ValueError(f"the {merge.value} merge needs appearance features; teach the best subset instead")


def subset_distillation_loss(probabilities: torch.Tensor, teacher: torch.Tensor, regions: str = "best",
                             merge: MergeStrategy | str = MergeStrategy.BORDER) -> torch.Tensor:
    """Mean soft Jaccard loss between a subset of each image's soft regions (B, K, h, w) and its soft
    teacher mask (B, 1, h, w), over the :func:`informative` images; 0 (with a gradient) where none is.
    ``regions``: ``best``, the subset matching the mask best, or ``both``, the mean of that and the
    subset ``merge`` picks."""
    if regions not in DISTILLED_REGIONS:
        raise ValueError(f"regions must be one of {DISTILLED_REGIONS}, got {regions!r}")
    keep = informative(teacher)
    if not keep.any():
        return probabilities.sum() * 0.0
    probabilities, teacher = probabilities[keep], teacher[keep, 0].to(probabilities.dtype)
    loss = _soft_jaccard_loss(probabilities, best_subsets(probabilities, teacher.unsqueeze(1)), teacher)
    if regions == "both":
        loss = (loss + _soft_jaccard_loss(probabilities, merged_subsets(probabilities, merge), teacher)) / 2
    return loss


def _soft_jaccard_loss(probabilities: torch.Tensor, chosen: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean of 1 − soft IoU between the unions of the ``chosen`` regions (B, K) and the masks (B, h, w)."""
    union = torch.einsum("bk,bkhw->bhw", chosen, probabilities)
    intersection = (union * teacher).sum(dim=(-2, -1))
    total = (union + teacher).sum(dim=(-2, -1)) - intersection
    return (1 - intersection / total.clamp_min(1e-6)).mean()
