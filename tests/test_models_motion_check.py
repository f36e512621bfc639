"""The motion check (models/motion_check.py): what adaptation grows onto the object is held back where its
flow moves like the original's background, and kept where it moves unlike it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.inference import predict, segment_frames
from models.motion_check import restrict_to_independent_motion
from models.segmenters import build_segmenter
from models.video_flow import VideoFlow

SIZE = (24, 40)
PAN = (-3.0, 0.0)  # the camera pans right: the background moves left; it tracks the object, which stays put


def _original() -> torch.Tensor:
    """The original network's soft foreground: the object at rows 8–16, columns 14–22."""
    original = torch.full(SIZE, 0.02)
    original[8:16, 14:22] = 0.9
    return original


def _flow(*patches: tuple[tuple[slice, slice], tuple[float, float]], frames: int = 1) -> VideoFlow:
    """Flow to the next frame: the pan everywhere, the object still, ``patches`` moving as given."""
    field = torch.tensor(PAN).expand(*SIZE, 2).clone()
    field[8:16, 14:22] = 0.0
    for (rows, columns), vector in patches:
        field[rows, columns] = torch.tensor(vector)
    flows = field.expand(frames, 1, *SIZE, 2).clone()
    return VideoFlow(flows, torch.ones(frames, 1, dtype=torch.bool), (1,))


def _grown(*patches: tuple[slice, slice]) -> torch.Tensor:
    """The adapted soft foreground: the object, and ``patches`` grown onto it."""
    adapted = torch.full(SIZE, 0.1)
    adapted[8:16, 14:22] = 0.95
    for rows, columns in patches:
        adapted[rows, columns] = 0.8
    return adapted


SCENERY = (slice(8, 16), slice(2, 14))  # left of the object and touching it
MISSED = (slice(16, 20), slice(16, 22))  # below it, apart from the scenery: the part the original missed


def test_growth_moving_with_the_background_is_held_and_growth_moving_with_the_object_kept() -> None:
    adapted = _grown(SCENERY, MISSED)
    flow = _flow((MISSED, (0.0, 0.0)))  # the missed part moves with the object; the scenery pans
    result = restrict_to_independent_motion(adapted[None], _original()[None], flow)[0]
    assert torch.equal(result[SCENERY], _original()[SCENERY])
    assert torch.equal(result[MISSED], adapted[MISSED])
    assert torch.equal(result[8:16, 14:22], adapted[8:16, 14:22])  # what both call foreground is untouched
    assert torch.equal(result[:8], adapted[:8])  # and so is what both call background


def test_growth_moving_unlike_the_background_stays_even_when_the_objects_model_fits_it_worse() -> None:
    """A limb swinging faster than the pan: the background's model explains it better than the body's,
    but far worse than it explains the background, so it is not background (both conditions needed)."""
    limb = (slice(16, 22), slice(14, 18))
    adapted = _grown(limb)
    flow = _flow((limb, (-6.0, 0.0)))
    assert torch.equal(restrict_to_independent_motion(adapted[None], _original()[None], flow)[0], adapted)


def test_frames_with_nothing_to_judge_by_keep_their_adapted_masks() -> None:
    adapted = torch.stack([_grown(SCENERY)] * 3)
    nothing = torch.full(SIZE, 0.02)
    adapted[2] = 0.1
    adapted[2][SCENERY] = 0.8  # adaptation found the scenery where the original found nothing: it stays
    flow = _flow(frames=3)
    flow = VideoFlow(flow.flows, torch.tensor([[True], [False], [True]]), flow.gaps)  # frame 1: no neighbour
    result = restrict_to_independent_motion(adapted, torch.stack([_original(), _original(), nothing]), flow)
    assert torch.equal(result[1], adapted[1]) and torch.equal(result[2], adapted[2])
    assert torch.equal(result[0][SCENERY], _original()[SCENERY])  # the frame that can be judged is


def test_shrinking_is_never_held() -> None:
    adapted = _original().clone()
    adapted[8:16, 14:17] = 0.2
    assert torch.equal(restrict_to_independent_motion(adapted[None], _original()[None], _flow())[0], adapted)


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match="differ"):
        restrict_to_independent_motion(torch.zeros(1, *SIZE), torch.zeros(2, *SIZE), _flow())
    with pytest.raises(ValueError, match="does not match"):
        restrict_to_independent_motion(torch.zeros(2, *SIZE), torch.zeros(2, *SIZE), _flow())


def test_segment_frames_applies_the_check_only_when_asked_and_needs_the_flow() -> None:
    """Two unrelated random networks: the adapted one grows where the original saw background. The
    camera pans and the original's foreground stays put, so that growth moves like the background and
    the check must hold some of it back, and may add nothing."""
    torch.manual_seed(0)
    original = build_segmenter("unet", num_regions=4, width=8).eval()
    adapted = build_segmenter("unet", num_regions=4, width=8).eval()
    frames = [np.random.default_rng(i).integers(0, 256, (SIZE[0], SIZE[1], 3), dtype=np.uint8) for i in range(4)]
    _, found = predict(original, frames, SIZE, merge="border")
    flows = torch.tensor(PAN).expand(4, 1, *SIZE, 2).clone()
    flows[(found > 0.5)[:, None]] = 0.0
    flow = VideoFlow(flows, torch.ones(4, 1, dtype=torch.bool), (1,))

    def masks(model: torch.nn.Module, **checks: object) -> np.ndarray:
        return np.stack(list(segment_frames(model, frames, SIZE, torch.device("cpu"), "border", flow=flow,
                                            appearance_check=False, component_check=False, steadiness_check=False,
                                            **checks)))

    unchecked = masks(adapted, original=original, motion_check=False)
    checked = masks(adapted, original=original, motion_check=True)
    originals = masks(original)
    assert (unchecked & ~originals).any()  # there is growth to judge
    assert (checked & ~originals).sum() < (unchecked & ~originals).sum()
    assert not (checked & ~unchecked).any()
    with pytest.raises(ValueError, match="flow"):
        next(segment_frames(adapted, frames, SIZE, torch.device("cpu"), "border", original=original))
