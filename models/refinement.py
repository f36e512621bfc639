"""Edge-aware refinement of a foreground mask at output resolution (an option; the paper's † rows use a CRF).

The network predicts soft regions at its input size (128×224); up-sampled to a photo's size they are
smooth blobs whose borders ignore the image's edges. A guided filter (He, Sun & Tang, 2010) with the
image as guide makes the soft mask locally an affine function of the image's colours, so its 0.5
level moves onto nearby colour edges. It runs in linear time whatever the radius, which is why it is
used here rather than a dense CRF (OpenCV's implementation, ``cv2.ximgproc.guidedFilter``, from the
maintained ``opencv-contrib`` build).

The radius scales with the image (a fraction of its diagonal), so a thumbnail and a 4K photo get the
same relative smoothing.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .merging import masks_at_size

__all__ = [
    "EPSILON",
    "GUIDE_MAX_PIXELS",
    "RADIUS_FRACTION",
    "foreground_mask",
    "refine_soft_mask",
    "refinement_guide",
]

#: Filter radius as a fraction of the image diagonal (≈ 39 px on 854×480).
RADIUS_FRACTION = 0.04
#: Regularisation ε of the guided filter, for guide intensities in [0, 1]: smaller follows edges more
#: closely.
EPSILON = 1e-3
#: Largest guide image; bigger photos are refined on an area-downscaled copy (2 MP ≈ 1920×1080).
GUIDE_MAX_PIXELS = 2_100_000


def refine_soft_mask(image: np.ndarray, soft: np.ndarray, radius_fraction: float = RADIUS_FRACTION,
                     epsilon: float = EPSILON) -> np.ndarray:
    """Guided-filter a soft mask (H, W) in [0, 1] with its RGB uint8 image (H, W, 3) as guide."""
    if image.shape[:2] != soft.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {soft.shape} differ in size")
    radius = max(1, round(radius_fraction * float(np.hypot(*soft.shape))))
    refined = cv2.ximgproc.guidedFilter(np.ascontiguousarray(image), soft.astype(np.float32), radius,
                                        epsilon * 255.0 ** 2)
    return np.clip(refined, 0.0, 1.0)


def refinement_guide(image: np.ndarray, max_pixels: int = GUIDE_MAX_PIXELS) -> np.ndarray:
    """The image the filter is guided by: ``image`` itself, or an area-downscaled copy of at most
    ``max_pixels``, which bounds the filter's time and memory on very large photos."""
    height, width = image.shape[:2]
    if height * width <= max_pixels:
        return image
    scale = (max_pixels / (height * width)) ** 0.5
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def foreground_mask(soft: torch.Tensor, size: tuple[int, int], guide: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask at ``size`` = (H, W) from a soft foreground (h, w) at the network's size.

    The soft mask is up-sampled bilinearly and only then thresholded at 0.5, which keeps boundaries
    smooth (reference notes). With a ``guide`` image (see :func:`refinement_guide`), it is first
    up-sampled to the guide's size and guided-filtered there, then resized to ``size``.
    """
    size = (int(size[0]), int(size[1]))
    if guide is None:
        return masks_at_size(soft[None], size)[0].numpy()
    refined = refine_soft_mask(guide, _resize(soft, tuple(guide.shape[:2])).numpy())
    return (_resize(torch.from_numpy(refined), size) > 0.5).numpy()


def _resize(soft: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    if tuple(soft.shape) == size:
        return soft.float()
    return F.interpolate(soft[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
