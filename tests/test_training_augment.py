"""Training augmentation (training/augment.py): appearance leaves the motion alone, zoom crops keep
image and flow consistent, and every draw comes from the run's generator."""

from __future__ import annotations

import pytest
import torch

from models.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from training.augment import Augmentation, augment, moving_region
from training.batch import Batch

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
    batch = Batch(images, flows)
    assert augment(batch, Augmentation(), generator) is batch
    assert torch.equal(generator.get_state(), state)


def test_appearance_changes_the_frame_but_not_the_flow():
    images, flows = _scene(batch=16)
    config = Augmentation(colour_jitter=0.4, grey_probability=0.5, blur_probability=0.5)
    out = augment(Batch(images, flows.clone()), config, torch.Generator().manual_seed(1))
    out_images = out.images
    assert torch.equal(out.flows, flows)
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
    out = augment(Batch(images, flows), config, torch.Generator().manual_seed(seed))
    out_images, out_flows = out.images, out.flows
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
    first = augment(Batch(images, flows), config, torch.Generator().manual_seed(7))
    second = augment(Batch(images, flows), config, torch.Generator().manual_seed(7))
    assert torch.equal(first.images, second.images) and torch.equal(first.flows, second.flows)


def test_flow_trust_masks_follow_the_flow_through_crops():
    images, flows = _scene(batch=8)
    trusted = (flows[:, :1] > 0.5).float()  # trust exactly the moving square's vectors
    out = augment(Batch(images, flows, confidence=trusted, teacher=trusted), Augmentation(max_zoom=1.6),
                  torch.Generator().manual_seed(3))
    out_flows, out_trusted, out_teacher = out.flows, out.confidence, out.teacher
    assert torch.equal(out_trusted, (out_flows[:, :1] > 0.5).float())
    assert out_trusted.shape == trusted.shape
    # teacher masks are resampled bilinearly (they are soft): they agree but at the square's edge
    agreement = ((out_teacher > 0.5) == (out_flows[:, :1] > 0.5)).float().mean()
    assert agreement > 0.97


def _camera_pan(flows: torch.Tensor, pan: float = -1.5) -> torch.Tensor:
    """The same flows with a camera pan added: a zoom-like quadratic background motion the square
    does not share (the square keeps its own flow)."""
    b, _, h, w = flows.shape
    xs = torch.linspace(-1, 1, w).view(1, 1, w).expand(1, h, w)
    background = torch.cat([pan + 0.5 * xs, 0.3 * xs**2], dim=0)
    moving = flows[:, :1].abs() > 0
    return torch.where(moving, flows, background.unsqueeze(0).expand(b, 2, h, w))


def test_moving_region_is_what_moves_unlike_the_background():
    _, flows = _scene(batch=2, flow_size=(32, 60), shift=3.0)
    truth = flows[:, :1] > 0
    found = moving_region(_camera_pan(flows))
    iou = (found & truth).sum() / (found | truth).sum()
    assert iou > 0.85
    # a flow that is the dominant motion everywhere has no moving region
    assert not moving_region(_camera_pan(torch.zeros_like(flows))).any()


def test_moving_region_ignores_flow_it_does_not_trust():
    _, flows = _scene(batch=2, flow_size=(32, 60), shift=3.0)
    truth = flows[:, :1] > 0
    flows = _camera_pan(flows)
    garbage = torch.zeros(2, 1, 32, 60, dtype=torch.bool)
    garbage[:, :, 20:30, 2:14] = True  # an occlusion: vectors that fit nothing, flagged by the trust check
    flows = torch.where(garbage, torch.tensor([6.0, -5.0]).view(1, 2, 1, 1), flows)
    trust = (~garbage).float()
    assert (moving_region(flows) & garbage).sum() > 0.5 * garbage.sum()  # untrusted, it looks like an object
    found = moving_region(flows, trust)
    assert not (found & garbage).any()
    assert (found & truth).sum() / (found | truth).sum() > 0.85  # the object is still found


def test_copy_paste_moves_another_samples_object_with_its_flow():
    images, flows = _scene(batch=4, image_size=(64, 120), flow_size=(32, 60))
    flows = _camera_pan(flows)
    # only sample 1 has an object: the others are the background alone, in a plain colour and flow
    plain = (torch.tensor([0.2, 0.2, 0.8]).view(1, 3, 1, 1) - MEAN) / STD
    donor_images, donor_flows = images[1:2].clone(), flows[1:2].clone()
    images = plain.expand(4, 3, 64, 120).clone()
    images[1:2] = donor_images
    flows = _camera_pan(torch.zeros_like(flows))
    flows[1:2] = donor_flows
    trust = torch.ones(4, 1, 32, 60)
    trust[1] = 0.5  # the donor's trust travels with its vectors
    config = Augmentation(copy_paste=1.0)
    teacher = torch.zeros(4, 1, 32, 60)
    teacher[1, 0] = (donor_flows[0, 0] == 3.0).float()  # the donor's teacher mask travels with its pixels
    out = augment(Batch(images, flows, confidence=trust, teacher=teacher), config, torch.Generator().manual_seed(0))
    out_images, out_flows, out_trust, out_teacher = out.images, out.flows, out.confidence, out.teacher
    square = donor_flows[0, 0] == 3.0
    receivers = [i for i in (0, 2, 3) if _square(out_images)[i].any()]
    assert len(receivers) == 1  # the one sample whose donor is sample 1 received the square
    receiver = receivers[0]
    assert torch.equal(out_flows[receiver][:, square], donor_flows[0][:, square])
    assert torch.equal(out_flows[receiver][:, ~square], flows[receiver][:, ~square])
    assert torch.equal(out_trust[receiver, 0], torch.where(square, 0.5, 1.0))
    assert torch.equal(out_teacher[receiver, 0], square.float())
    image_square = _square(out_images)[receiver]
    assert image_square.sum().item() == pytest.approx(_square(donor_images)[0].sum().item(), rel=0.15)
    assert torch.equal(out_images[1], images[1])  # the donor's own donors had nothing that moved


def test_relative_paste_moves_the_object_unlike_its_new_background():
    """The square moves at 3 px in a scene panning at −1.5; pasted onto a scene panning at +3, its flow as
    it is would move with the new background (nothing there moves unlike it), while its relative flow
    keeps the motion that made it an object."""
    images, flows = _scene(batch=4, image_size=(64, 120), flow_size=(32, 60))
    donor_flows = _camera_pan(flows[1:2])
    donor_background = _camera_pan(torch.zeros_like(donor_flows))
    plain = (torch.tensor([0.2, 0.2, 0.8]).view(1, 3, 1, 1) - MEAN) / STD
    images = torch.cat([plain.expand(1, 3, 64, 120), images[1:2], plain.expand(2, 3, 64, 120)])
    receiver_background = _camera_pan(torch.zeros_like(flows[:1]), pan=3.0)
    flows = torch.cat([receiver_background, donor_flows, receiver_background, receiver_background])
    square = donor_flows[0, 0] == 3.0
    outputs = {relative: augment(Batch(images, flows), Augmentation(copy_paste=1.0, paste_relative_flow=relative),
                                 torch.Generator().manual_seed(0)) for relative in (False, True)}
    receiver = next(i for i in (0, 2, 3) if _square(outputs[True].images)[i].any())
    absolute, relative = outputs[False].flows[receiver], outputs[True].flows[receiver]
    assert torch.equal(absolute[:, square], donor_flows[0][:, square])
    assert torch.allclose(relative[:, square] - receiver_background[0][:, square],
                          donor_flows[0][:, square] - donor_background[0][:, square], atol=1e-3)
    assert torch.equal(relative[:, ~square], receiver_background[0][:, ~square])  # elsewhere nothing changed

    def found_square(flow: torch.Tensor) -> float:  # IoU of the moving region with the square
        found = moving_region(flow[None])[0, 0]
        return float((found & square).sum() / (found | square).sum())

    assert found_square(relative) > 0.85 and found_square(absolute) < 0.2


def test_copy_paste_skips_regions_too_small_to_be_an_object():
    """A moving patch under 1 % of the frame (3×5 of 32×60 flow vectors: 0.8 %) is noise, not pasted."""
    images, flows = _scene(batch=4)
    flows = torch.zeros_like(flows)
    for i in range(4):  # a patch in another place in each sample, so that a paste would show
        flows[i, 0, 10:13, 10 + 8 * i:15 + 8 * i] = 3.0
    flows = _camera_pan(flows)
    assert moving_region(flows).any()  # found as moving, then left out by its area
    out = augment(Batch(images, flows), Augmentation(copy_paste=1.0), torch.Generator().manual_seed(0))
    assert torch.equal(out.images, images) and torch.equal(out.flows, flows)


def _varied_scene(batch: int):
    """_scene with each sample's square moved 2·i flow-grid pixels to the right (4·i image pixels), so
    that a paste changes its receiver."""
    images, flows = _scene(batch=batch)
    for i in range(batch):
        images[i] = images[i].roll(4 * i, dims=-1)
        flows[i] = flows[i].roll(2 * i, dims=-1)
    return images, _camera_pan(flows)


def test_copy_paste_draws_from_the_generator_and_leaves_inputs_alone():
    images, flows = _varied_scene(batch=6)
    before = images.clone(), flows.clone()

    def run(seed: int) -> tuple[torch.Tensor, ...]:
        out = augment(Batch(images, flows), Augmentation(copy_paste=0.5), torch.Generator().manual_seed(seed))
        return out.images, out.flows

    first, again, other = run(5), run(5), run(6)
    assert not torch.equal(first[1], flows)  # something was pasted
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))  # another seed, other draws
    assert torch.equal(images, before[0]) and torch.equal(flows, before[1])
