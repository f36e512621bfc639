"""The interface every segmentation network implements."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import nn

__all__ = ["Segmenter", "SegmenterOutput"]


class SegmenterOutput(NamedTuple):
    """What a segmenter computes for a batch: the regions, and the appearance features that merge them."""

    #: Region logits (B, K, H, W) at the input resolution.
    logits: torch.Tensor
    #: Appearance features (B, C, h, w), usually coarser than the input, for merging (Eq. 6).
    features: torch.Tensor


class Segmenter(nn.Module):
    """A network Φ that maps one RGB image to K region logits (paper Eq. 1).

    Subclasses implement :meth:`forward_with_features`, which also returns appearance features: the
    merging step (Eq. 6) needs a feature per pixel and, without external self-supervised weights,
    the segmenter's own feature maps are the features we have. (Not timm's ``forward_features``,
    which returns backbone features only.)

    Attributes:
        num_regions: K, the number of soft regions predicted.
        feature_dim: channels of the appearance features returned by :meth:`forward_with_features`.
        any_input_size: whether the network takes any height and width that are multiples of 16, so
            that images can be fed in their own aspect ratio (:attr:`models.spec.ModelSpec.keep_aspect`).
    """

    num_regions: int
    feature_dim: int
    any_input_size: bool = False

    def forward_with_features(self, image: torch.Tensor) -> SegmenterOutput:
        """Region logits and appearance features for a normalised image batch (B, 3, H, W)."""
        raise NotImplementedError

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Region logits (B, K, H, W) for a normalised image batch (B, 3, H, W)."""
        return self.forward_with_features(image).logits

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters of the image encoder, the part before any decoding into regions: what
        test-time adaptation may hold fixed (training.adapt.AdaptationSettings.adapt_encoder)."""
        raise NotImplementedError
