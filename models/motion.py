"""Parametric motion models, their closed-form weighted least-squares fit, and the GWM loss.

The segmentation network predicts K soft regions. For each region k the optical flow inside it is
explained by a parametric model ``F_u ≈ θ_kᵀ φ(u)`` where ``φ(u)`` is a basis of pixel coordinates.
The parameters are *minned out* in closed form (paper Eq. 4, App. B), so the loss depends on the
masks only and is differentiable with respect to them:

    L = Σ_u Σ_k p_k(u) · ‖F_u − θ_k*ᵀ φ(u)‖²,   θ_k* = argmin_θ Σ_u w_k(u) ‖F_u − θᵀ φ(u)‖²

Coordinates are normalised to [-1, 1] (x by width, y by height). The authors' code uses [0, 1); any
affine change of coordinates spans the same function space for every basis here, so the minimum and
therefore the loss are identical; [-1, 1] only improves the conditioning of the normal equations.

Everything is batched over images and regions; there are no Python loops over pixels or regions.
"""

from __future__ import annotations

from enum import Enum

import torch

__all__ = [
    "MotionModel",
    "WeightPower",
    "coordinate_basis",
    "fit_motion",
    "motion_loss",
    "motion_residuals",
]


class MotionModel(str, Enum):
    """The flow model fitted to each region (paper §3.1, ablation in Table 3)."""

    CONSTANT = "constant"  # A = 0: a translation per region, 2 parameters
    AFFINE = "affine"  # [x, y, 1] per flow channel, 6 parameters
    QUADRATIC = "quadratic"  # [x, x², y, y², xy, 1] per flow channel, 12 parameters (paper default)

    @property
    def num_basis(self) -> int:
        return {"constant": 1, "affine": 3, "quadratic": 6}[self.value]


class WeightPower(int, Enum):
    """How the soft mask weights the least-squares fit.

    The paper (App. B) weights pixel u of region k by p_k(u). The authors' released code multiplies
    both the basis and the flow by the mask before a QR solve, which weights by p_k(u)². Both are
    offered; the paper's choice is the default.
    """

    PAPER = 1
    REFERENCE_CODE = 2


def coordinate_basis(
    height: int,
    width: int,
    model: MotionModel | str = MotionModel.QUADRATIC,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Return the basis φ(u) for every pixel, shape (H·W, P), pixels in row-major order.

    Pixel centres are mapped to [-1, 1]. The bias column is last, matching the paper's
    ``u = [x, x², y, y², xy]`` followed by ``b``.
    """
    model = MotionModel(model)
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width * 2 - 1
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    x, y = x.reshape(-1), y.reshape(-1)
    one = torch.ones_like(x)
    if model is MotionModel.CONSTANT:
        columns = [one]
    elif model is MotionModel.AFFINE:
        columns = [x, y, one]
    else:
        columns = [x, x * x, y, y * y, x * y, one]
    return torch.stack(columns, dim=-1)


def fit_motion(
    weights: torch.Tensor,
    flow: torch.Tensor,
    basis: torch.Tensor,
    *,
    ridge: float = 1e-6,
) -> torch.Tensor:
    """Solve the weighted least-squares problem of every region in closed form.

    Args:
        weights: (B, K, N) non-negative per-pixel weights of each region.
        flow: (B, N, C) optical flow at the same N pixels, C = 2 (u, v); several flows of the same
            frame (to different neighbours) may share one fit of the weights as more channels.
        basis: (N, P) coordinate basis from :func:`coordinate_basis`.
        ridge: Tikhonov term relative to each region's total weight. A region whose mask is ~0
            everywhere has singular normal equations; the ridge makes its θ shrink to zero instead of
            producing NaNs, and is small enough (1e-6 of the mass) not to bias well-posed fits.

    Returns:
        θ of shape (B, K, P, C): ``flow ≈ basis @ θ[b, k]`` inside region k.

    The normal equations ``(Φᵀ W Φ + λI) θ = Φᵀ W F`` are formed and solved in float64: they are
    tiny (P ≤ 6) so this costs nothing, and it keeps the solve accurate for thin regions.
    """
    w = weights.double()
    phi = basis.double()
    f = flow.double()
    (b, k, n), p = w.shape, phi.shape[-1]
    # both sides as matrix products over the pixels, (Φᵀ W Φ)_pq = Σ_u w(u) φ_p(u) φ_q(u) and
    # (Φᵀ W F)_pc = Σ_u φ_p(u) w(u) F_c(u), without a (B, K, N, P) weighted copy of the basis (3× faster)
    gram = (w @ (phi.unsqueeze(-1) * phi.unsqueeze(-2)).reshape(n, p * p)).reshape(b, k, p, p)  # Φᵀ W Φ
    rhs = ((w.unsqueeze(-1) * f.unsqueeze(1)).transpose(-1, -2) @ phi).transpose(-1, -2)  # Φᵀ W F: (B, K, P, C)
    mass = w.sum(dim=-1).clamp_min(1e-12)  # (B, K)
    eye = torch.eye(p, dtype=gram.dtype, device=gram.device)
    gram = gram + (ridge * mass)[..., None, None] * eye
    theta = torch.linalg.solve(gram, rhs)
    return theta.to(weights.dtype)


def motion_residuals(flow: torch.Tensor, basis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Squared residual ‖F_u − θ_kᵀ φ(u)‖² of every pixel under every region's model, summed over the
    flow's channels: (B, K, N)."""
    prediction = torch.matmul(basis, theta)  # (B, K, N, C); 6× faster than the equivalent einsum on the CPU
    return (flow.unsqueeze(1) - prediction).pow(2).sum(dim=-1)


def motion_loss(
    probabilities: torch.Tensor,
    flow: torch.Tensor,
    model: MotionModel | str = MotionModel.QUADRATIC,
    *,
    weight_power: WeightPower | int = WeightPower.PAPER,
    basis: torch.Tensor | None = None,
    confidence: torch.Tensor | None = None,
) -> torch.Tensor:
    """The GWM energy (Eq. 3–4) averaged over pixels and images.

    Args:
        probabilities: (B, K, H, W) soft region masks, summing to one over K (softmax output).
        flow: (B, 2, H, W) optical flow at the same resolution, channels (u, v).
        model: the motion model fitted per region.
        weight_power: 1 for the paper's p-weighted fit, 2 for the authors' code (p²).
        basis: optional precomputed :func:`coordinate_basis` for (H, W) to avoid rebuilding it.
        confidence: optional (B, 1, H, W) or (B, H, W) weights c(u) ≥ 0 of how far each pixel's flow
            is trusted (e.g. 0 where a forward–backward check fails: occlusions, compression noise).
            Pixel u then counts c(u) times in the fit and in the loss, and the loss is normalised by
            Σ_u c(u) instead of HW; ``None`` (every c = 1) is the paper's loss exactly.

    Returns:
        A scalar: ``mean_b (1/HW) Σ_u Σ_k p_k(u) ‖F_u − θ_k*ᵀ φ(u)‖²``. The fitted parameters depend
        on the masks and gradients flow through the closed-form solve, as in the paper.
    """
    b, k, h, w = probabilities.shape
    if flow.shape != (b, 2, h, w):
        raise ValueError(f"flow must have shape {(b, 2, h, w)}, got {tuple(flow.shape)}")
    if basis is None:
        basis = coordinate_basis(h, w, model, device=flow.device, dtype=flow.dtype)
    p = probabilities.reshape(b, k, h * w)
    f = flow.reshape(b, 2, h * w).transpose(1, 2)
    fit_weights = p.pow(int(weight_power))
    if confidence is None:
        theta = fit_motion(fit_weights, f, basis)
        return (p * motion_residuals(f, basis, theta)).sum(dim=1).mean()
    c = confidence.reshape(b, 1, h * w).to(p.dtype)
    theta = fit_motion(fit_weights * c, f, basis)
    per_pixel = (p * motion_residuals(f, basis, theta)).sum(dim=1)  # (B, N)
    return ((per_pixel * c[:, 0]).sum(dim=1) / c[:, 0].sum(dim=1).clamp_min(1.0)).mean()
