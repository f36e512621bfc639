"""Image preparation shared by training, evaluation, adaptation and the service.

One function decides how an RGB frame becomes network input, so that a model sees exactly the same
thing when it is trained, evaluated, adapted on a video, and served from ONNX.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import cv2
import numpy as np

__all__ = [
    "DEFAULT_INPUT_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAX_ASPECT",
    "SIZE_MULTIPLE",
    "indices_by_size",
    "network_input_size",
    "prepare_image",
    "resize_flow",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: (height, width) the paper feeds its networks (App. A).
DEFAULT_INPUT_SIZE: tuple[int, int] = (128, 224)
#: Sides of an input sized to its image's aspect ratio are multiples of this: the U-Net halves its
#: grid four times, so every level then divides evenly.
SIZE_MULTIPLE = 16
#: Aspect ratios beyond this (a panorama, a receipt) are fed at this one, the rest stretched: at
#: 28 672 pixels a 4:1 input is already 80 pixels high.
MAX_ASPECT = 4.0


def network_input_size(image_size: Sequence[int], input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
                       keep_aspect: bool = True) -> tuple[int, int]:
    """The (height, width) an image of ``image_size`` = (H, W) is fed to the network at.

    Without ``keep_aspect``, ``input_size`` whatever the image: the paper's fixed 128×224 (App. A),
    right for 16:9 video and a stretch of everything else — a portrait phone photo squeezed 2.3×
    sideways. With it, about as many pixels as ``input_size`` (the cost the network was measured at)
    in the image's own aspect ratio, each side a multiple of :data:`SIZE_MULTIPLE`: 16:9 images get
    exactly 128×224, 4:3 photos 144×192, portrait ones 192×144.
    A fully convolutional network trained on 16:9 frames then sees shapes as it learned them
    (README, Model card: measured on ECSSD and on portrait crops of DAVIS). Photos only: video jobs
    feed frames at ``input_size``, where test-time adaptation measured better (training/adapt.py).
    """
    height, width = int(input_size[0]), int(input_size[1])
    if not keep_aspect:
        return height, width
    aspect = min(max(image_size[1] / max(image_size[0], 1), 1 / MAX_ASPECT), MAX_ASPECT)  # width / height
    fitted_height = (height * width / aspect) ** 0.5

    def multiple(side: float) -> int:
        return max(SIZE_MULTIPLE, round(side / SIZE_MULTIPLE) * SIZE_MULTIPLE)

    return multiple(fitted_height), multiple(fitted_height * aspect)


def indices_by_size(sizes: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """The positions of each distinct input size in ``sizes``, sizes in order of first appearance: inputs
    of one size share a network run, and each result goes back to its position."""
    groups: dict[Hashable, list[int]] = {}
    for index, size in enumerate(sizes):
        groups.setdefault(size, []).append(index)
    return groups


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
