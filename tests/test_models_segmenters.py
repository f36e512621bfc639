"""Segmentation networks (models/segmenters): shapes, gradients, construction errors."""

from __future__ import annotations

import pytest
import torch

from models.segmenters import ARCHITECTURES, BackboneSegmenter, SegmenterOutput, UNet, build_segmenter


@pytest.mark.parametrize("depth", [2, 4])
def test_unet_logits_and_features(depth):
    torch.manual_seed(0)
    model = build_segmenter("unet", num_regions=3, width=4, depth=depth)
    assert isinstance(model, UNet) and model.num_regions == 3
    image = torch.randn(2, 3, 64, 96)
    output = model.forward_with_features(image)
    assert isinstance(output, SegmenterOutput)
    logits, features = output
    assert logits.shape == (2, 3, 64, 96)
    assert features.shape == (2, model.feature_dim, 16, 24)
    assert torch.isfinite(logits).all() and torch.isfinite(features).all()
    torch.testing.assert_close(model(image), logits)
    logits.softmax(1)[:, 0].mean().backward()
    assert model.head.weight.grad is not None and model.stem[0].weight.grad.abs().sum() > 0


def test_unet_handles_sizes_not_divisible_by_16():
    model = build_segmenter("unet", num_regions=2, width=4).eval()
    logits, features = model.forward_with_features(torch.randn(1, 3, 50, 70))
    assert logits.shape == (1, 2, 50, 70)
    assert features.shape[:2] == (1, model.feature_dim)


def test_unet_rejects_zero_depth():
    with pytest.raises(ValueError):
        UNet(depth=0)


def test_backbone_resnet18_random_weights():
    torch.manual_seed(0)
    model = build_segmenter("backbone", num_regions=4, backbone="resnet18", embed_dim=16)
    assert isinstance(model, BackboneSegmenter)
    image = torch.randn(2, 3, 64, 96)
    logits, features = model.forward_with_features(image)
    assert logits.shape == (2, 4, 64, 96)
    assert features.shape == (2, model.feature_dim, 2, 3)  # resnet18: 512 channels at stride 32
    assert model.feature_dim == 512
    assert torch.isfinite(logits).all()
    # the K masks are different functions of the image (queries are not collapsed)
    assert (logits[:, 0] - logits[:, 1]).abs().mean() > 0
    logits.mean().backward()
    assert model.queries.grad is not None


def test_backbone_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_segmenter("backbone", backbone="resnet18", weights=tmp_path / "nope.pth")


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_segmenter("transformer-of-doom")
    assert set(ARCHITECTURES) == {"unet", "backbone"}


@pytest.mark.parametrize(("architecture", "options", "encoder_part"),
                         [("unet", {"width": 4}, "down"), ("backbone", {"backbone": "resnet18", "embed_dim": 16}, "backbone")])
def test_encoder_parameters_are_the_encoders_and_only_them(architecture, options, encoder_part):
    model = build_segmenter(architecture, num_regions=2, **options)
    encoder = {id(p) for p in model.encoder_parameters()}
    names = {name for name, p in model.named_parameters() if id(p) in encoder}
    assert names and any(name.startswith(encoder_part) for name in names)
    assert not any(name.startswith(("head", "up.", "queries", "lateral")) for name in names)
    assert len(names) < len(list(model.parameters()))
