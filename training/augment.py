"""Training augmentation: appearance changes that leave the motion alone, and zoom crops that move
image and flow together.

The paper trains without augmentation (its data are the videos it is evaluated on). A model that must
segment videos and photos it has never seen profits from not learning the training set's colours
and framing by heart, so gwm offers, as explicit options (all off by default, as in the paper):

- colour jitter (brightness, contrast, saturation), greyscale and Gaussian blur: only the network's
  input changes, the flow target does not — the object still moves the same way;
- random zoom crops: a random window of the frame is scaled up to the input size and the flow is
  cropped to the same window and rescaled (its vectors grow by the zoom factor), so image and flow
  stay consistent;
- copy-paste of moving things: what moves unlike its own frame's background in one sample of the
  batch — found from the flow alone, no label and no network — is pasted, pixels and flow, onto
  another sample. The training videos then show each object over many backgrounds, so the network
  cannot learn which background goes with which object by heart (60 videos is few).

Every random draw comes from the training run's generator, so a resumed run replays it exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.motion import MotionModel, coordinate_basis, fit_motion, motion_residuals
from models.preprocessing import IMAGENET_MEAN, IMAGENET_STD

from .batch import Batch

__all__ = ["Augmentation", "augment", "moving_region"]

#: Luma weights of ITU-R BT.601, what greyscale conversions commonly use.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Augmentation:
    """Strengths and probabilities; the defaults do nothing.

    Args:
        colour_jitter: brightness, contrast and saturation factors are drawn from [1 − s, 1 + s].
        grey_probability: chance that a frame is turned grey (three equal channels).
        blur_probability: chance of a Gaussian blur with σ drawn from ``blur_sigma`` (input pixels).
        max_zoom: a window of 1/z of the frame's height and width, z drawn from [1, max_zoom], is
            scaled up to the full input; 1.0 disables cropping.
        copy_paste: chance that a sample receives the moving region of another sample of the batch
            (see :func:`moving_region`); a donor with no such region, or one outside ``PASTE_AREA`` of the
            frame, gives nothing.
        paste_relative_flow: the pasted flow is the donor's motion relative to its own background added
            to the receiver's background motion, not the donor's flow as it is. Pasted as it is, a thing
            that moved with a panning camera's speed can land on a background panning the same way and
            not move at all there, while its pixels still differ from the background: the loss then
            teaches nothing about it, or teaches that such things are background. Relative, every pasted
            thing moves unlike its new background by exactly what made it a moving region.
    """

    colour_jitter: float = 0.0
    grey_probability: float = 0.0
    blur_probability: float = 0.0
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    max_zoom: float = 1.0
    copy_paste: float = 0.0
    paste_relative_flow: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.colour_jitter or self.grey_probability or self.blur_probability or self.max_zoom > 1.0
                    or self.copy_paste)


def _uniform(low: float, high: float, n: int, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _appearance(rgb: torch.Tensor, config: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Colour jitter, greyscale and blur on RGB in [0, 1], (B, 3, H, W)."""
    n = len(rgb)
    luma = rgb.new_tensor(_LUMA).view(1, 3, 1, 1)
    if config.colour_jitter:
        s = config.colour_jitter
        brightness, contrast, saturation = (_uniform(1 - s, 1 + s, n, generator).view(n, 1, 1, 1) for _ in range(3))
        rgb = rgb * brightness
        mean = (rgb * luma).sum(1, keepdim=True).mean(dim=(-2, -1), keepdim=True)
        rgb = (rgb - mean) * contrast + mean
        grey = (rgb * luma).sum(1, keepdim=True)
        rgb = (rgb - grey) * saturation + grey
    if config.grey_probability:
        turn_grey = (torch.rand(n, generator=generator) < config.grey_probability).view(n, 1, 1, 1)
        rgb = torch.where(turn_grey, (rgb * luma).sum(1, keepdim=True).expand_as(rgb), rgb)
    if config.blur_probability:
        blur = torch.rand(n, generator=generator) < config.blur_probability
        sigmas = _uniform(*config.blur_sigma, n, generator)
        for i in torch.nonzero(blur).flatten().tolist():
            rgb[i] = _gaussian_blur(rgb[i], float(sigmas[i]))
    return rgb.clamp(0.0, 1.0)


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of one (C, H, W) image, reflect padding."""
    radius = max(1, round(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = image.shape[0]
    out = F.pad(image[None], (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


def _zoom_crop(batch: Batch, max_zoom: float, generator: torch.Generator) -> Batch:
    """Random windows of the images (B, 3, H, W) and the same windows of the flows (B, 2, h, w) in
    pixels of their grid (and of their maps), each scaled back up to its full size; flow vectors are
    multiplied by the zoom.

    The window is one affine sampling grid in normalised coordinates, shared by image and flow, so
    the two stay aligned whatever their resolutions."""
    images, flows = batch.images, batch.flows
    n = len(images)
    zooms = _uniform(1.0, max_zoom, n, generator)
    centres = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - 1 / zooms).unsqueeze(1)  # (x, y)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / zooms
    theta[:, :, 2] = centres
    theta = theta.to(images)

    def sample(tensor: torch.Tensor, mode: str) -> torch.Tensor:
        grid = F.affine_grid(theta, list(tensor.shape), align_corners=False)
        return F.grid_sample(tensor, grid, mode=mode, padding_mode="border", align_corners=False)

    return batch.with_maps(sample, images=sample(images, "bilinear"),
                           flows=sample(flows, "nearest") * zooms.to(flows).view(n, 1, 1, 1))


#: A flow vector belongs to the moving region when its residual under the frame's dominant quadratic
#: motion exceeds this many times the median residual, and at least MIN_RESIDUAL pixels of the flow grid.
RESIDUAL_FACTOR, MIN_RESIDUAL = 3.0, 1.0
#: Moving regions outside this fraction of the frame are not pasted: below, noise; above, the
#: "background" fit has failed (the camera's motion is not the dominant one).
PASTE_AREA = (0.01, 0.4)


def moving_region(flows: torch.Tensor, confidence: torch.Tensor | None = None) -> torch.Tensor:
    """Where each flow (B, 2, h, w) moves unlike its frame's dominant motion: (B, 1, h, w) booleans.

    The dominant motion is the quadratic model (the loss's own) fitted to the whole frame, then refitted
    to the vectors it explains well (residual below twice the median), so that a moving object does not
    drag the background's fit. A 3×3 opening removes isolated vectors. With ``confidence`` (B, 1, h, w)
    in [0, 1] (the forward–backward trust of models/video_flow.py), the fits weigh each vector by it
    and a vector trusted less than half is never moving: an occlusion's garbage is not an object."""
    return _dominant_motion(flows, confidence)[1]


def _dominant_motion(flows: torch.Tensor, confidence: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each flow's dominant motion, as a flow (B, 2, h, w), and :func:`moving_region`'s mask."""
    b, _, h, w = flows.shape
    basis = coordinate_basis(h, w, MotionModel.QUADRATIC, device=flows.device, dtype=flows.dtype)
    vectors = flows.flatten(2).transpose(1, 2)  # (B, N, 2)
    trust = (torch.ones(b, 1, h * w, dtype=flows.dtype, device=flows.device) if confidence is None
             else confidence.reshape(b, 1, h * w).to(flows.dtype))
    weights = trust
    for _ in range(2):
        theta = fit_motion(weights, vectors, basis)  # (B, 1, P, 2)
        residual = motion_residuals(vectors, basis, theta).sqrt()  # (B, 1, N)
        median = _trusted_median(residual, trust)
        weights = trust * (residual <= 2 * median).to(flows.dtype)
    moving = (residual > torch.clamp(RESIDUAL_FACTOR * median, min=MIN_RESIDUAL)) & (trust >= 0.5)
    moving = moving.view(b, 1, h, w).float()
    opened = F.max_pool2d(-F.max_pool2d(-moving, 3, 1, 1), 3, 1, 1)  # erosion, then dilation
    background = torch.matmul(basis, theta[:, 0]).transpose(1, 2).reshape(b, 2, h, w)
    return background, opened > 0.5


def _trusted_median(values: torch.Tensor, trust: torch.Tensor) -> torch.Tensor:
    """Median of ``values`` (B, 1, N) over the entries trusted at least ½ (all of them where none is)."""
    counted = trust >= 0.5
    counted = counted | ~counted.any(dim=-1, keepdim=True)
    masked = torch.where(counted, values, torch.full_like(values, float("nan")))
    return masked.nanmedian(dim=-1, keepdim=True).values


def _copy_paste(batch: Batch, probability: float, generator: torch.Generator, relative: bool = False) -> Batch:
    """Paste the moving region of sample (i + offset) mod B onto sample i, for each i drawn with
    ``probability``: its pixels (edges feathered over one flow-grid pixel) and its flow vectors (and
    maps), where they are — as they are, or with ``relative`` their motion relative to the donor's
    dominant motion added to the receiver's (see :class:`Augmentation`). Returns a new batch."""
    images, flows = batch.images, batch.flows
    n = len(images)
    receives = torch.rand(n, generator=generator) < probability
    offset = int(torch.randint(1, max(n, 2), (1,), generator=generator))
    if n < 2 or not receives.any():
        return batch
    donor = (torch.arange(n) + offset) % n
    background, moving = _dominant_motion(flows, batch.confidence)
    region = moving[donor]
    area = region.flatten(1).float().mean(1)
    paste = (receives.to(area.device) & (area >= PASTE_AREA[0]) & (area <= PASTE_AREA[1])).view(n, 1, 1, 1)
    region = region & paste
    alpha = F.avg_pool2d(region.float(), 3, 1, 1, count_include_pad=False)
    alpha = F.interpolate(alpha, size=images.shape[-2:], mode="bilinear", align_corners=False)
    pasted = background + flows[donor] - background[donor] if relative else flows[donor]
    return batch.with_maps(lambda values, _: torch.where(region, values[donor], values),
                           images=images + alpha * (images[donor] - images), flows=torch.where(region, pasted, flows))


def augment(batch: Batch, config: Augmentation, generator: torch.Generator) -> Batch:
    """Augment a batch: normalised network inputs (B, 3, H, W), flow (B, 2, h, w) in pixels of the
    flow grid (before conversion to reference units), and the maps that follow the flow's crop and
    paste (trust, teacher). Returns a new batch; the input is unchanged."""
    if not config.enabled:
        return batch
    if config.max_zoom > 1.0:
        batch = _zoom_crop(batch, config.max_zoom, generator)
    if config.copy_paste:
        batch = _copy_paste(batch, config.copy_paste, generator, config.paste_relative_flow)
    if config.colour_jitter or config.grey_probability or config.blur_probability:
        mean = batch.images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = batch.images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        rgb = _appearance(batch.images * std + mean, config, generator)
        batch = dataclasses.replace(batch, images=(rgb - mean) / std)
    return batch
