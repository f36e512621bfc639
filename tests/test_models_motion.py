"""The closed-form motion fit and the GWM loss (models/motion.py) against independent solvers."""

from __future__ import annotations

import pytest
import torch

from models.motion import MotionModel, WeightPower, coordinate_basis, fit_motion, motion_loss, motion_residuals

MODELS = [MotionModel.CONSTANT, MotionModel.AFFINE, MotionModel.QUADRATIC]


def _lstsq_theta(weights: torch.Tensor, flow: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Reference solve, region by region: sqrt(w)·Φ θ = sqrt(w)·F with torch.linalg.lstsq (float64)."""
    b, k, _ = weights.shape
    out = torch.empty(b, k, basis.shape[1], 2, dtype=torch.float64)
    for i in range(b):
        for j in range(k):
            root = weights[i, j].double().sqrt().unsqueeze(-1)
            out[i, j] = torch.linalg.lstsq(root * basis.double(), root * flow[i].double(), driver="gelsd").solution
    return out


def _random_problem(seed: int, b: int = 2, k: int = 3, h: int = 9, w: int = 11):
    g = torch.Generator().manual_seed(seed)
    probabilities = torch.rand(b, k, h, w, generator=g, dtype=torch.float64).softmax(dim=1)
    flow = torch.randn(b, 2, h, w, generator=g, dtype=torch.float64) * 3
    return probabilities, flow


def _reference_loss(probabilities, flow, model, power):
    b, k, h, w = probabilities.shape
    basis = coordinate_basis(h, w, model, dtype=torch.float64)
    p = probabilities.reshape(b, k, h * w)
    f = flow.reshape(b, 2, h * w).transpose(1, 2)
    theta = _lstsq_theta(p.pow(power), f, basis)
    residual = (f.unsqueeze(1) - torch.einsum("np,bkpc->bknc", basis, theta)).pow(2).sum(-1)
    return (p * residual).sum(dim=1).mean()


@pytest.mark.parametrize("model", MODELS)
def test_fit_motion_matches_lstsq(model):
    b, k, h, w = 2, 3, 9, 11
    g = torch.Generator().manual_seed(1)
    weights = torch.rand(b, k, h * w, generator=g, dtype=torch.float64)
    flow = torch.randn(b, h * w, 2, generator=g, dtype=torch.float64)
    basis = coordinate_basis(h, w, model, dtype=torch.float64)
    assert basis.shape == (h * w, model.num_basis)
    expected = _lstsq_theta(weights, flow, basis)
    exact = fit_motion(weights, flow, basis, ridge=0.0)
    assert exact.shape == (b, k, model.num_basis, 2)
    torch.testing.assert_close(exact, expected, rtol=1e-9, atol=1e-10)
    # The default ridge (1e-6 of the mass) must not bias a well-posed fit noticeably.
    default = fit_motion(weights, flow, basis)
    torch.testing.assert_close(default, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model", MODELS)
def test_fit_motion_float32_inputs_are_solved_accurately(model):
    g = torch.Generator().manual_seed(2)
    weights = torch.rand(2, 3, 99, generator=g)
    flow = torch.randn(2, 99, 2, generator=g)
    basis = coordinate_basis(9, 11, model)
    theta = fit_motion(weights, flow, basis, ridge=0.0)
    assert theta.dtype == torch.float32
    torch.testing.assert_close(theta.double(), _lstsq_theta(weights, flow, basis), rtol=1e-4, atol=1e-5)


def _piecewise_quadratic_scene(seed: int, b: int = 2, k: int = 3, h: int = 16, w: int = 20):
    """Hard one-hot masks and a flow that is exactly quadratic (its own θ) inside each region."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(k, (b, h, w), generator=g)
    # every region must be big enough for a 6-parameter fit: stamp one block per label
    for j in range(k):
        labels[:, :, j * (w // k):(j + 1) * (w // k)][:, : h // 2] = j
    masks = torch.nn.functional.one_hot(labels, k).permute(0, 3, 1, 2).double()
    theta = torch.randn(b, k, 6, 2, generator=g, dtype=torch.float64) * 4
    basis = coordinate_basis(h, w, MotionModel.QUADRATIC, dtype=torch.float64)
    per_region = torch.einsum("np,bkpc->bknc", basis, theta)  # (B, K, N, 2)
    flow = (masks.reshape(b, k, h * w, 1) * per_region).sum(1)  # (B, N, 2)
    return masks, flow.transpose(1, 2).reshape(b, 2, h, w), labels


@pytest.mark.parametrize("power", [1, 2])
def test_loss_vanishes_on_exact_piecewise_quadratic_flow(power):
    masks, flow, _ = _piecewise_quadratic_scene(3)
    loss = motion_loss(masks, flow, "quadratic", weight_power=power)
    energy = flow.pow(2).sum(1).mean()
    assert energy > 1.0
    assert loss.item() >= 0
    assert loss.item() / energy.item() < 1e-8


def test_loss_is_positive_when_masks_are_wrong():
    masks, flow, _ = _piecewise_quadratic_scene(4)
    energy = flow.pow(2).sum(1).mean().item()
    right = motion_loss(masks, flow).item()
    # The loss does not care which label a region has ...
    relabelled = motion_loss(masks[:, [1, 0, 2]], flow).item()
    assert abs(relabelled - right) <= 1e-9 * energy
    # ... but it does care where the regions are: swap regions 0 and 1 in the left half only,
    # and, separately, shift every mask by a few pixels.
    swapped = masks.clone()
    half = masks.shape[-1] // 2
    swapped[:, [0, 1], :, :half] = masks[:, [1, 0], :, :half]
    swapped = motion_loss(swapped, flow).item()
    shifted = motion_loss(masks.roll(3, dims=-1), flow).item()
    one_region = motion_loss(torch.stack([masks.sum(1)] + [torch.zeros_like(masks[:, 0])] * 2, 1), flow).item()
    assert right / energy < 1e-8
    assert swapped / energy > 1e-3
    assert shifted / energy > 1e-3
    assert one_region / energy > 1e-3
    # A simpler motion model cannot explain quadratic flow even with the right masks.
    assert motion_loss(masks, flow, "affine").item() / energy > 1e-3


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("power", [1, 2])
def test_motion_loss_matches_lstsq_reference(model, power):
    probabilities, flow = _random_problem(5)
    loss = motion_loss(probabilities, flow, model, weight_power=power)
    expected = _reference_loss(probabilities, flow, model, power)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-8)


def test_weight_power_changes_the_fit_on_soft_masks():
    probabilities, flow = _random_problem(6)
    p1 = motion_loss(probabilities, flow, weight_power=WeightPower.PAPER)
    p2 = motion_loss(probabilities, flow, weight_power=WeightPower.REFERENCE_CODE)
    ref2 = _reference_loss(probabilities, flow, MotionModel.QUADRATIC, 2)
    torch.testing.assert_close(p2, ref2, rtol=1e-5, atol=1e-8)
    # p and p² weighting are different estimators: the test above would pass for the wrong power otherwise
    assert abs(p1.item() - p2.item()) > 1e-4 * p1.item()
    # with power 1, θ* minimises exactly this objective, so power 2 can only do worse on it
    assert p2.item() > p1.item()


def test_empty_region_gives_finite_theta_loss_and_gradients():
    masks, flow, _ = _piecewise_quadratic_scene(7, k=3)
    # region 2 empty everywhere in image 0, region 0 empty in image 1
    masks[0, 2] = 0
    masks[0, 0] = 1 - masks[0, 1]
    masks[1, 0] = 0
    masks[1, 1] = 1 - masks[1, 2]
    for dtype in (torch.float64, torch.float32):
        p = masks.to(dtype).clone().requires_grad_(True)
        h, w = p.shape[-2:]
        basis = coordinate_basis(h, w, dtype=dtype)
        theta = fit_motion(p.reshape(2, 3, -1), flow.to(dtype).reshape(2, 2, -1).transpose(1, 2), basis)
        assert torch.isfinite(theta).all()
        torch.testing.assert_close(theta[0, 2], torch.zeros_like(theta[0, 2]))  # shrinks to zero, no NaN
        loss = motion_loss(p, flow.to(dtype))
        assert torch.isfinite(loss)
        loss.backward()
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_empty_region_through_softmax_logits():
    """A region the network never predicts (huge negative logit) must not break training."""
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(2, 4, 12, 16, generator=g)
    logits[:, 3] = -1e4
    logits.requires_grad_(True)
    flow = torch.randn(2, 2, 12, 16, generator=g) * 5
    loss = motion_loss(logits.softmax(1), flow)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert logits.grad[:, :3].abs().sum() > 0


def test_gradcheck_wrt_probabilities():
    g = torch.Generator().manual_seed(9)
    probabilities = (torch.rand(1, 2, 4, 5, generator=g, dtype=torch.float64) + 0.1).requires_grad_(True)
    flow = torch.randn(1, 2, 4, 5, generator=g, dtype=torch.float64)
    for power in (1, 2):
        assert torch.autograd.gradcheck(
            lambda p, power=power: motion_loss(p, flow, "affine", weight_power=power), (probabilities,), eps=1e-6, atol=1e-6
        )


def test_envelope_theorem_gradient_equals_residuals():
    """With p-weighting, θ* minimises the loss itself, so ∂L/∂p_k(u) = r_k(u)/(B·N) (the θ path cancels)."""
    probabilities, flow = _random_problem(10)
    p = probabilities.clone().requires_grad_(True)
    motion_loss(p, flow, weight_power=1).backward()
    b, k, h, w = p.shape
    basis = coordinate_basis(h, w, dtype=torch.float64)
    f = flow.reshape(b, 2, -1).transpose(1, 2)
    theta = _lstsq_theta(probabilities.reshape(b, k, -1), f, basis)
    residual = motion_residuals(f, basis, theta).reshape(b, k, h, w) / (b * h * w)
    torch.testing.assert_close(p.grad, residual, rtol=1e-4, atol=1e-9)


def test_motion_loss_rejects_mismatched_flow():
    with pytest.raises(ValueError):
        motion_loss(torch.rand(1, 2, 8, 8).softmax(1), torch.zeros(1, 2, 8, 9))


@pytest.mark.parametrize("model", MODELS)
def test_confidence_weighted_loss_matches_lstsq_on_the_trusted_pixels(model):
    """With 0/1 confidence, the loss is the paper's loss over the trusted pixels only: solved by
    lstsq on those pixels, and blind to whatever the flow is elsewhere."""
    probabilities, flow = _random_problem(7)
    b, k, h, w = probabilities.shape
    g = torch.Generator().manual_seed(8)
    confidence = (torch.rand(b, 1, h, w, generator=g) > 0.3).double()
    loss = motion_loss(probabilities, flow, model, confidence=confidence)
    basis = coordinate_basis(h, w, model, dtype=torch.float64)
    p = probabilities.reshape(b, k, h * w)
    f = flow.reshape(b, 2, h * w).transpose(1, 2)
    expected = []
    for i in range(b):
        keep = confidence[i].reshape(-1).bool()
        theta = _lstsq_theta(p[i:i + 1, :, keep], f[i:i + 1, keep], basis[keep])
        residual = (f[i:i + 1, keep].unsqueeze(1) - torch.einsum("np,bkpc->bknc", basis[keep], theta)).pow(2).sum(-1)
        expected.append((p[i:i + 1, :, keep] * residual).sum(dim=1).mean())
    torch.testing.assert_close(loss, torch.stack(expected).mean(), rtol=1e-5, atol=1e-8)
    corrupted = flow.clone()
    corrupted += (1 - confidence) * 1e3 * torch.randn(flow.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(motion_loss(probabilities, corrupted, model, confidence=confidence), loss)


def test_unit_confidence_is_the_paper_loss():
    probabilities, flow = _random_problem(9)
    ones = torch.ones(probabilities.shape[0], 1, *probabilities.shape[2:], dtype=torch.float64)
    torch.testing.assert_close(motion_loss(probabilities, flow, confidence=ones), motion_loss(probabilities, flow))
