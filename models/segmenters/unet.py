"""The U-Net segmenter trained from scratch (paper §4.2 and App. A, "standard 4-layer version").

The layout follows the classic U-Net (four 2× down-sampling stages, bilinear up-sampling, skip
connections). ``width`` sets the channels of the first stage (the original uses 64); every stage
doubles it. A width of 16–32 keeps CPU training practical.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .base import Segmenter, SegmenterOutput

__all__ = ["UNet"]


class _DoubleConv(nn.Sequential):
    """(conv 3×3 → batch norm → ReLU) × 2."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class _Up(nn.Module):
    """Bilinear 2× up-sampling, concatenation with the skip connection, double conv."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = _DoubleConv(in_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(Segmenter):
    """Four-level U-Net that predicts ``num_regions`` logits per pixel.

    The appearance features for merging are the last decoder stage concatenated with the
    bottleneck, which carries more context, both at 1/4 of the input resolution: the merge only needs
    one mean feature per region, and full-resolution features would make every ONNX call return tens
    of megabytes.
    """

    feature_stride = 4
    any_input_size = True  # fully convolutional; each decoder stage upsamples to its skip's size

    def __init__(self, num_regions: int = 4, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self.num_regions = num_regions
        channels = [width * 2**i for i in range(depth + 1)]
        self.stem = _DoubleConv(3, channels[0])
        self.down = nn.ModuleList(_DoubleConv(channels[i], channels[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(
            _Up(channels[i + 1], channels[i], channels[i]) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(channels[0], num_regions, kernel_size=1)
        self.feature_dim = channels[0] + channels[-1]

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        return itertools.chain(self.stem.parameters(), self.down.parameters())

    def forward_with_features(self, image: torch.Tensor) -> SegmenterOutput:
        x = self.stem(image)
        skips = [x]
        for block in self.down:
            x = block(F.max_pool2d(x, 2))
            skips.append(x)
        bottleneck = x
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = block(x, skip)
        logits = self.head(x)
        local = F.avg_pool2d(x, self.feature_stride)
        context = F.interpolate(bottleneck, size=local.shape[-2:], mode="bilinear", align_corners=False)
        return SegmenterOutput(logits, torch.cat([local, context], dim=1))
