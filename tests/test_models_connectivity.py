"""The component check (models/connectivity.py): an adapted mask may reshape what the original network
found, however far, but a component of it the original's foreground does not touch is held back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.connectivity import restrict_to_anchored_components
from models.inference import segment_frames
from models.segmenters import build_segmenter

SIZE = (24, 40)


def _original() -> torch.Tensor:
    """The original network's soft foreground: a small object at the left, 0.1 elsewhere."""
    original = torch.full(SIZE, 0.1)
    original[8:14, 4:10] = 0.8
    return original


def test_a_detached_component_is_held_and_the_anchored_one_kept_however_far_it_grows() -> None:
    original = _original()
    adapted = torch.full(SIZE, 0.2)
    adapted[6:16, 4:22] = 0.9  # the object, grown well to the right of what the original found
    adapted[2:6, 30:38] = 0.7  # a patch of the scene far away, switched on by adaptation
    result = restrict_to_anchored_components(adapted[None], original[None])[0]
    assert torch.equal(result[6:16, 4:22], adapted[6:16, 4:22])
    assert torch.equal(result[2:6, 30:38], original[2:6, 30:38])
    assert torch.equal(result[20:, :], adapted[20:, :])  # background below 0.5 is left as it is


def test_a_component_is_8_connected() -> None:
    """A blob joined by one corner to a blob that overlaps the original's foreground is part of it."""
    original = _original()
    adapted = torch.full(SIZE, 0.2)
    adapted[8:14, 4:10] = 0.9  # the object
    adapted[14:18, 10:20] = 0.9  # its top-left pixel (14, 10) meets the object's (13, 9) by a corner
    assert torch.equal(restrict_to_anchored_components(adapted[None], original[None])[0], adapted)
    adapted[14, 10] = 0.2  # without the corner pixel it is detached
    result = restrict_to_anchored_components(adapted[None], original[None])[0]
    assert torch.equal(result[15:18, 11:20], original[15:18, 11:20])


def test_a_frame_where_the_original_found_nothing_keeps_its_adapted_mask() -> None:
    nothing = torch.full(SIZE, 0.1)
    adapted = torch.full(SIZE, 0.2)
    adapted[2:6, 30:38] = 0.7
    frames = restrict_to_anchored_components(torch.stack([adapted, adapted]), torch.stack([_original(), nothing]))
    assert torch.equal(frames[1], adapted)  # nothing to anchor to
    assert torch.equal(frames[0][2:6, 30:38], _original()[2:6, 30:38])  # each frame is judged by its own original


def test_a_frame_where_no_adapted_component_touches_the_original_gets_the_originals_mask() -> None:
    """The networks disagree entirely: holding every component back would leave the frame empty."""
    original = _original()
    adapted = torch.full(SIZE, 0.2)
    adapted[2:6, 30:38] = 0.7  # only a patch far from what the original found
    assert torch.equal(restrict_to_anchored_components(adapted[None], original[None])[0], original)


def test_no_frames_and_bad_shapes() -> None:
    assert restrict_to_anchored_components(torch.zeros(0, *SIZE), torch.zeros(0, *SIZE)).shape == (0, *SIZE)
    with pytest.raises(ValueError, match="differ"):
        restrict_to_anchored_components(torch.zeros(1, *SIZE), torch.zeros(2, *SIZE))
    with pytest.raises(ValueError, match=r"\(N, h, w\)"):
        restrict_to_anchored_components(torch.zeros(SIZE), torch.zeros(SIZE))


def test_shrinking_is_never_held() -> None:
    original = _original()
    adapted = original.clone()
    adapted[8:14, 4:7] = 0.3  # adaptation removed part of the original's foreground
    assert torch.equal(restrict_to_anchored_components(adapted[None], original[None])[0], adapted)


def test_segment_frames_applies_the_check_only_when_asked() -> None:
    """Two unrelated random networks disagree on where the foreground is, so the check must change
    some masks; each checked mask holds back part of the unchecked one, or is the original's."""
    torch.manual_seed(0)
    original = build_segmenter("unet", num_regions=4, width=8).eval()
    adapted = build_segmenter("unet", num_regions=4, width=8).eval()
    frames = [np.random.default_rng(i).integers(0, 256, (SIZE[0], SIZE[1], 3), dtype=np.uint8) for i in range(6)]

    def masks(model: torch.nn.Module, **checks: object) -> np.ndarray:
        return np.stack(list(segment_frames(model, frames, SIZE, torch.device("cpu"), "border", **checks)))

    unchecked = masks(adapted, original=original, appearance_check=False, component_check=False, motion_check=False,
                      steadiness_check=False)
    checked = masks(adapted, original=original, appearance_check=False, component_check=True, motion_check=False,
                    steadiness_check=False)
    originals = masks(original)
    assert not np.array_equal(unchecked, checked)
    assert all(not (c & ~u).any() or np.array_equal(c, o) for c, u, o in zip(checked, unchecked, originals))
