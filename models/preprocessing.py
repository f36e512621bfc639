"""Image preparation shared by training, evaluation, adaptation and the service.

One function decides how an RGB frame becomes network input, so that a model sees exactly the same
thing when it is trained, evaluated, adapted on a video, and served from ONNX.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DEFAULT_INPUT_SIZE", "prepare_image", "resize_flow"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: (height, width) the paper feeds its networks (App. A).
DEFAULT_INPUT_SIZE: tuple[int, int] = (128, 224)


def prepare_image(
    rgb: np.ndarray,
    size: Sequence[int] = DEFAULT_INPUT_SIZE,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """Resize an RGB uint8 image (H, W, 3) bicubically to ``size`` and normalise it.

    Returns float32 (3, h, w). Bicubic resizing follows the paper (App. A).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {rgb.shape}")
    height, width = int(size[0]), int(size[1])
    resized = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_CUBIC)
    scaled = resized.astype(np.float32) / 255.0
    normalised = (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def resize_flow(flow: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize a flow field (H, W, 2) in pixels to ``size`` = (h, w), rescaling its units.

    Nearest-neighbour sampling, as the paper does for its loss (App. A): averaging flow across a
    motion boundary would invent motion that no region has.
    """
    height, width = int(size[0]), int(size[1])
    src_h, src_w = flow.shape[:2]
    resized = cv2.resize(flow, (width, height), interpolation=cv2.INTER_NEAREST)
    scale = np.asarray([width / src_w, height / src_h], np.float32)
    return (resized * scale).astype(np.float32)
