"""A segmenter on a timm feature backbone with a light mask head, in the MaskFormer spirit.

The paper's best model is MaskFormer on a DINO ViT (§4.1, App. A). This module keeps the idea at a
size that runs anywhere: a timm backbone (ResNet, ViT, Swin, ... anything ``features_only`` supports)
gives a feature pyramid; a small FPN pixel decoder turns it into per-pixel embeddings; K learned
queries attend once to the coarsest features and the mask logits are query · pixel-embedding dot
products. As in App. A, the masks are brought back to input resolution with
``[Conv 3×3, nearest up 2×, Conv 1×1] × 2`` after the stride-4 decoder output.

Pretrained weights are only ever read from a local file the user names; with none, the backbone has
random weights, so the network still builds, trains and exports.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..preprocessing import DEFAULT_INPUT_SIZE
from .base import Segmenter, SegmenterOutput

__all__ = ["DEFAULT_BACKBONE", "BackboneSegmenter"]

#: The timm model used when none is named: small enough to train on a CPU.
DEFAULT_BACKBONE = "resnet18"


class _Upsample2x(nn.Sequential):
    """One of App. A's ``[Conv(3), UpsampleNN(2), Conv(1)]`` blocks."""

    def __init__(self, channels: int) -> None:
        super().__init__(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(channels, channels, 1),
        )


class BackboneSegmenter(Segmenter):
    """timm backbone + FPN pixel decoder + K learned mask queries.

    Args:
        num_regions: K.
        backbone: a timm model name, e.g. ``resnet18``, ``resnet50``, ``vit_small_patch8_224``.
        weights: optional local file (``.pth``/``.bin``/``.safetensors``) with backbone weights.
        embed_dim: channels of the pixel decoder and the queries.
        image_size: (H, W) input size; ViT backbones need it to size their position embeddings.
    """

    def __init__(
        self,
        num_regions: int = 4,
        backbone: str = DEFAULT_BACKBONE,
        weights: str | Path | None = None,
        embed_dim: int = 64,
        image_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    ) -> None:
        super().__init__()
        self.num_regions = num_regions
        kwargs: dict = {"features_only": True, "pretrained": weights is not None}
        if weights is not None:
            path = Path(weights)
            if not path.is_file():
                raise FileNotFoundError(f"backbone weights file not found: {path}")
            kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        if "vit" in backbone or "swin" in backbone or "deit" in backbone:
            kwargs["img_size"] = tuple(image_size)
        self.backbone = timm.create_model(backbone, **kwargs)
        stage_channels = self.backbone.feature_info.channels()
        self.lateral = nn.ModuleList(nn.Conv2d(c, embed_dim, 1) for c in stage_channels)
        self.smooth = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)
        self.queries = nn.Parameter(torch.randn(num_regions, embed_dim) * 0.02)
        self.query_attention = nn.MultiheadAttention(embed_dim, num_heads=4, batch_first=True)
        self.query_mlp = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(inplace=True))
        self.upsample = nn.Sequential(_Upsample2x(embed_dim), _Upsample2x(embed_dim))
        self.feature_dim = stage_channels[-1]

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def forward_with_features(self, image: torch.Tensor) -> SegmenterOutput:
        stages = self.backbone(image)
        # FPN top-down pass: start at the coarsest stage, add each finer lateral projection.
        pixel = self.lateral[-1](stages[-1])
        for lateral, stage in zip(reversed(self.lateral[:-1]), reversed(stages[:-1])):
            pixel = lateral(stage) + F.interpolate(pixel, size=stage.shape[-2:], mode="nearest")
        pixel = self.smooth(pixel)
        # Decoder output at stride 4 (MaskFormer's resolution), then App. A's two 2× blocks.
        stride4 = (image.shape[-2] // 4, image.shape[-1] // 4)
        pixel = self.upsample(F.interpolate(pixel, size=stride4, mode="bilinear", align_corners=False))
        coarse = self.lateral[-1](stages[-1]).flatten(2).transpose(1, 2)  # (B, hw, D)
        queries = self.queries.unsqueeze(0).expand(image.shape[0], -1, -1)
        attended, _ = self.query_attention(queries, coarse, coarse)
        queries = self.query_mlp(queries + attended)
        logits = torch.einsum("bkd,bdhw->bkhw", queries, pixel)
        logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return SegmenterOutput(logits, stages[-1])
