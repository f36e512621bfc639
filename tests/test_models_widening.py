"""Widening a trained U-Net (Net2WiderNet): the wider network computes what the narrow one did."""

from __future__ import annotations

import pytest
import torch

from models.segmenters import UNet
from models.segmenters.widening import widen_unet


def _trained_like(width: int, depth: int) -> UNet:
    """A U-Net whose batch norms are not the identity, as after training (fresh ones would hide a
    statistic copied to the wrong channel)."""
    torch.manual_seed(0)
    model = UNet(num_regions=4, width=width, depth=depth)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_()
        model.head.bias.normal_()
    return model


@pytest.mark.parametrize("depth", [2, 4])
def test_the_wider_network_computes_the_same_logits(depth):
    narrow = _trained_like(width=8, depth=depth)
    wide = widen_unet(narrow, 12)  # 1.5x: some channels copied, others not
    assert wide.stem[0].out_channels == 12 and wide.down[-1][3].out_channels == 12 * 2**depth
    image = torch.randn(2, 3, 48, 80)
    for mode in ("eval", "train"):  # training mode: the copies' batch statistics are their sources'
        getattr(narrow, mode)(), getattr(wide, mode)()
        with torch.no_grad():
            expected, got = narrow(image), wide(image)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert sum(p.numel() for p in wide.parameters()) > 2 * sum(p.numel() for p in narrow.parameters())


def test_noise_parts_the_copies_and_keeps_the_masks_close():
    narrow = _trained_like(width=8, depth=2).eval()
    exact, noisy = widen_unet(narrow, 16, seed=3).eval(), widen_unet(narrow, 16, noise=0.1, seed=3).eval()
    stem, noisy_stem = exact.stem[0].weight, noisy.stem[0].weight
    # Without noise channel 8 + j copies one of the first eight exactly; with it, the copies differ.
    assert all(any(torch.equal(stem[8 + j], stem[i]) for i in range(8)) for j in range(8))
    assert not any(torch.equal(noisy_stem[8 + j], noisy_stem[i]) for j in range(8) for i in range(8))
    torch.testing.assert_close(noisy_stem[:8], stem[:8])  # the old channels keep their weights
    image = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        same_regions = (noisy(image).argmax(1) == narrow(image).argmax(1)).float().mean()
    assert same_regions > 0.9


def test_a_narrower_width_is_refused():
    with pytest.raises(ValueError, match="cannot be widened"):
        widen_unet(UNet(width=8, depth=2), 4)
