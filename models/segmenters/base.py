"""The interface every segmentation network implements."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Segmenter"]


class Segmenter(nn.Module):
    """A network Φ that maps one RGB image to K region logits (paper Eq. 1).

    Subclasses implement :meth:`forward_features`, which also returns appearance features: the
    merging step (Eq. 6) needs a feature per pixel and, without external self-supervised weights,
    the segmenter's own feature maps are the features we have.

    Attributes:
        num_regions: K, the number of soft regions predicted.
        feature_dim: channels of the appearance features returned by :meth:`forward_features`.
    """

    num_regions: int
    feature_dim: int

    def forward_features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(logits (B, K, H, W) at the input resolution, features (B, C, h, w))``."""
        raise NotImplementedError

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Region logits (B, K, H, W) for a normalised image batch (B, 3, H, W)."""
        return self.forward_features(image)[0]
