"""Merging K soft regions into foreground and background (paper §3.2, Eq. 6).

With K > 2 the network over-segments. Regions are grouped by appearance: each region gets the
probability-weighted mean of per-pixel features, the K×K affinity is their cosine similarity floored
at ε = 1e-12, and a two-way spectral clustering of that graph splits regions into two groups.

Which group is the foreground? The paper's video benchmark picks it with ground truth; a service
cannot. We use the label-free rule of the authors' image pipeline (see reference notes): the group
that covers more of the image border is background. Per side, a 2-pixel strip "belongs" to a group
when the group's mean soft mass on it exceeds 30 %; the group owning more strips is background, and
ties are broken by the mean border mass. Objects rarely touch all four borders; backgrounds usually do.

:func:`oracle_merge` picks the best subset of regions with the ground truth. It exists for
evaluation only (the paper's Table 2 comparison) and is never used to serve.
"""

from __future__ import annotations

from itertools import product

import torch
import torch.nn.functional as F

__all__ = [
    "AFFINITY_EPSILON",
    "region_features",
    "region_affinity",
    "spectral_bipartition",
    "background_group",
    "foreground_probability",
    "masks_at_size",
    "oracle_merge",
]

AFFINITY_EPSILON = 1e-12
BORDER_WIDTH = 2
BORDER_OWNERSHIP = 0.3


def region_features(probabilities: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Probability-weighted mean feature of every region: (B, K, C).

    ``features`` (B, C, h, w) may be coarser than the masks (B, K, H, W); the masks are then
    area-averaged down to the feature grid, which preserves each region's mass.
    """
    if probabilities.shape[-2:] != features.shape[-2:]:
        probabilities = F.adaptive_avg_pool2d(probabilities, features.shape[-2:])
    p = probabilities.flatten(2)
    v = features.flatten(2)
    weighted_sum = torch.einsum("bkn,bcn->bkc", p, v)
    return weighted_sum / p.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def region_affinity(mean_features: torch.Tensor, epsilon: float = AFFINITY_EPSILON) -> torch.Tensor:
    """Eq. 6: ``Π_ij = max(ε, cos(V̄_i, V̄_j))``, shape (B, K, K)."""
    unit = F.normalize(mean_features, dim=-1)
    return (unit @ unit.transpose(1, 2)).clamp_min(epsilon)


def spectral_bipartition(affinity: torch.Tensor) -> torch.Tensor:
    """Two-way spectral clustering (normalised cut, Shi–Malik) of each (K, K) affinity: (B, K) bool.

    Uses the sign of the Fiedler vector of the symmetric normalised Laplacian, rescaled by D^-1/2.
    If the Fiedler vector has one sign (a fully connected graph with no cut), the region least
    similar to the rest is split off so that both groups are non-empty.
    """
    a = affinity.double()
    degree = a.sum(dim=-1)
    inv_sqrt = degree.rsqrt()
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    laplacian = eye - inv_sqrt.unsqueeze(-1) * a * inv_sqrt.unsqueeze(-2)
    _, vectors = torch.linalg.eigh(laplacian)
    fiedler = vectors[..., 1] * inv_sqrt
    groups = fiedler > 0
    one_sided = groups.all(dim=-1) | (~groups).all(dim=-1)
    if one_sided.any():
        loner = (a.sum(dim=-1)).argmin(dim=-1)
        fallback = F.one_hot(loner, a.shape[-1]).bool()
        groups = torch.where(one_sided.unsqueeze(-1), fallback, groups)
    return groups


def background_group(group_probability: torch.Tensor) -> torch.Tensor:
    """Which of two merged soft masks (B, 2, H, W) is background, by border ownership: (B,) long."""
    w = BORDER_WIDTH
    strips = torch.stack(
        [
            group_probability[..., :w, :].mean(dim=(-2, -1)),
            group_probability[..., -w:, :].mean(dim=(-2, -1)),
            group_probability[..., :, :w].mean(dim=(-2, -1)),
            group_probability[..., :, -w:].mean(dim=(-2, -1)),
        ],
        dim=-1,
    )  # (B, 2, 4)
    owned = (strips > BORDER_OWNERSHIP).sum(dim=-1).double()
    score = owned + strips.mean(dim=-1).double() * 1e-3  # mean border mass breaks ties only
    return score.argmax(dim=-1)


def foreground_probability(logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Soft foreground mask (B, H, W) in [0, 1] from region logits (B, K, H, W) and features.

    Softmax over K, Eq. 6 affinity, spectral bipartition, and the border rule above.
    """
    probabilities = logits.float().softmax(dim=1)
    groups = spectral_bipartition(region_affinity(region_features(probabilities, features.float())))
    in_group = groups.to(probabilities.dtype)  # (B, K): 1 for group "True"
    group_true = torch.einsum("bk,bkhw->bhw", in_group, probabilities)
    merged = torch.stack([1 - group_true, group_true], dim=1)
    background = background_group(merged)
    return torch.where(background.view(-1, 1, 1) == 1, merged[:, 0], merged[:, 1])


def masks_at_size(soft: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Up-sample soft masks (B, H, W) bilinearly to ``size`` and threshold at 0.5 (in this order,
    which keeps boundaries smooth, as the reference notes recommend): (B, h, w) bool."""
    resized = F.interpolate(soft.unsqueeze(1).float(), size=tuple(size), mode="bilinear", align_corners=False)
    return resized.squeeze(1) > 0.5


def oracle_merge(probabilities: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Evaluation only: the soft foreground from the subset of regions whose mask best matches the
    ground truth (B, H, W) bool at the same resolution. Returns (B, H, W) soft foreground."""
    k = probabilities.shape[1]
    subsets = torch.tensor(list(product([0.0, 1.0], repeat=k))[1:], dtype=probabilities.dtype,
                           device=probabilities.device)  # every non-empty subset, (S, K)
    candidates = torch.einsum("sk,bkhw->bshw", subsets, probabilities) > 0.5
    truth = truth.unsqueeze(1)
    intersection = (candidates & truth).flatten(2).sum(-1).double()
    union = (candidates | truth).flatten(2).sum(-1).double()
    iou = torch.where(union > 0, intersection / union.clamp_min(1), torch.ones_like(union))
    best = subsets[iou.argmax(dim=1)]  # (B, K)
    return torch.einsum("bk,bkhw->bhw", best, probabilities)
