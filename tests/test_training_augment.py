"""Training augmentation (training/augment.py): appearance leaves the motion alone, zoom crops keep
image and flow consistent, and every draw comes from the run's generator."""

from __future__ import annotations

import pytest
import torch

from models.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from training.augment import Augmentation, augment

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _scene(batch: int = 4, image_size=(64, 120), flow_size=(32, 60), shift: float = 3.0):
    """Normalised images with a red square on a green-grey ground, and flow that moves only the
    square by ``shift`` pixels of the flow grid to the right."""
    h, w = image_size
    rgb = torch.tensor([0.3, 0.5, 0.4]).view(1, 3, 1, 1).repeat(batch, 1, h, w)
    rgb[:, :, h // 4:h // 2, w // 3:w // 2] = torch.tensor([0.9, 0.2, 0.2]).view(1, 3, 1, 1)
    fh, fw = flow_size
    flows = torch.zeros(batch, 2, fh, fw)
    flows[:, 0, fh // 4:fh // 2, fw // 3:fw // 2] = shift
    return (rgb - MEAN) / STD, flows


def _square(images: torch.Tensor) -> torch.Tensor:
    return (images * STD + MEAN)[:, 0] > 0.6


def test_disabled_augmentation_changes_nothing_and_draws_nothing():
    images, flows = _scene()
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    out_images, out_flows, _ = augment(images, flows, Augmentation(), generator)
    assert out_images is images and out_flows is flows
    assert torch.equal(generator.get_state(), state)


def test_appearance_changes_the_frame_but_not_the_flow():
    images, flows = _scene(batch=16)
    config = Augmentation(colour_jitter=0.4, grey_probability=0.5, blur_probability=0.5)
    out_images, out_flows, _ = augment(images, flows.clone(), config, torch.Generator().manual_seed(1))
    assert torch.equal(out_flows, flows)
    rgb = out_images * STD + MEAN
    assert rgb.min() >= -1e-5 and rgb.max() <= 1 + 1e-5
    changed = (out_images - images).abs().flatten(1).amax(1) > 1e-3
    assert changed.all()
    grey = (rgb[:, 0] - rgb[:, 1]).abs().amax(dim=(-2, -1)) < 1e-5
    assert 0 < grey.sum() < 16  # some frames made grey, not all
    assert torch.equal(images, _scene(batch=16)[0])  # inputs untouched


def _centre(mask: torch.Tensor) -> torch.Tensor:
    """Centroid (y, x) of a boolean mask in units of its own grid's height and width (0..1)."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    h, w = mask.shape
    return torch.stack([(ys.float().mean() + 0.5) / h, (xs.float().mean() + 0.5) / w])


@pytest.mark.parametrize("seed", range(4))
def test_zoom_crop_moves_image_and_flow_together(seed):
    images, flows = _scene(batch=8)
    config = Augmentation(max_zoom=1.6)
    out_images, out_flows, _ = augment(images, flows, config, torch.Generator().manual_seed(seed))
    image_square, moving = _square(out_images), out_flows[:, 0] > 0.5
    compared = 0
    for i in range(len(images)):
        if moving[i].sum() < 20 or moving[i].float().mean() > 0.5:  # mostly cropped away: skip
            continue
        compared += 1
        # same place in the frame, to within one flow-grid pixel
        offset = (_centre(image_square[i]) - _centre(moving[i])).abs()
        assert offset[0] < 1 / moving.shape[-2] and offset[1] < 1 / moving.shape[-1]
        square = image_square[i]
        if square[0].any() or square[-1].any() or square[:, 0].any() or square[:, -1].any():
            continue  # cut by the window: its area no longer tells the zoom
        zoom = (square.sum() / _square(images)[i].sum()).sqrt()  # the area grows with zoom²
        assert out_flows[i, 0][moving[i]].mean() == pytest.approx(3.0 * zoom.item(), rel=0.12)
    assert compared >= 4


def test_augmentation_is_reproducible_from_the_generator():
    images, flows = _scene(batch=6)
    config = Augmentation(colour_jitter=0.3, grey_probability=0.2, blur_probability=0.3, max_zoom=1.5)
    first = augment(images, flows, config, torch.Generator().manual_seed(7))
    second = augment(images, flows, config, torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(first[:2], second[:2]))


def test_flow_trust_masks_follow_the_flow_through_crops():
    images, flows = _scene(batch=8)
    trusted = (flows[:, :1] > 0.5).float()  # trust exactly the moving square's vectors
    _, out_flows, out_trusted = augment(images, flows, Augmentation(max_zoom=1.6), torch.Generator().manual_seed(3),
                                        trusted)
    assert torch.equal(out_trusted, (out_flows[:, :1] > 0.5).float())
    assert out_trusted.shape == trusted.shape
