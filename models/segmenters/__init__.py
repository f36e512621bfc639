"""Segmentation networks: ``image -> K logits`` behind one interface, built by name."""

from __future__ import annotations

from typing import Any

from .backbone import DEFAULT_BACKBONE, BackboneSegmenter
from .base import Segmenter, SegmenterOutput
from .unet import UNet

__all__ = ["ARCHITECTURES", "DEFAULT_BACKBONE", "BackboneSegmenter", "Segmenter", "SegmenterOutput", "UNet", "build_segmenter"]

#: Architectures by the name used in configs, checkpoints and ONNX metadata.
ARCHITECTURES: dict[str, type[Segmenter]] = {"unet": UNet, "backbone": BackboneSegmenter}


def build_segmenter(architecture: str = "unet", **options: Any) -> Segmenter:
    """Build a segmenter by name; ``options`` go to its constructor (e.g. ``num_regions``, ``width``)."""
    try:
        cls = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {architecture!r}; choose from {sorted(ARCHITECTURES)}"
        ) from None
    return cls(**options)
