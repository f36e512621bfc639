"""The steadiness check (models/steadiness.py): adapted masks that flicker along the video's flow more than
twice as much as the original's are replaced by the original's; steady ones stay."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.inference import segment_frames
from models.steadiness import FLICKER_FACTOR, Steadiness, measure_steadiness
from models.video_flow import VideoFlow

SIZE = (48, 64)
FRAMES = 6


class ColourNetwork(torch.nn.Module):
    """Two regions: the foreground where any of ``channels`` is bright in the normalised input, else the
    background — a network whose masks are known in advance."""

    def __init__(self, *channels: int) -> None:
        super().__init__()
        self.channels = list(channels)

    def forward_with_features(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bright = (batch[:, self.channels] > 1.0).any(dim=1).float()
        return torch.stack((1 - bright, bright), dim=1) * 20, batch


def _still_flow(frames: int = FRAMES, gaps: tuple[int, ...] = (-1, 1)) -> VideoFlow:
    """A still camera over a still scene: zero flow to each existing neighbour."""
    index = torch.arange(frames)[:, None]
    valid = ((index + torch.tensor(gaps)) >= 0) & ((index + torch.tensor(gaps)) < frames)
    return VideoFlow(torch.zeros(frames, len(gaps), *SIZE, 2), valid, gaps)


def _frames(green_in: set[int]) -> list[np.ndarray]:
    """A red square in every frame; a green one beside it in the frames of ``green_in``."""
    frames = []
    for i in range(FRAMES):
        frame = np.full((*SIZE, 3), 100, dtype=np.uint8)
        frame[16:32, 24:40] = (255, 0, 0)
        if i in green_in:
            frame[18:30, 8:20] = (0, 255, 0)
        frames.append(frame)
    return frames


def _segment(frames: list[np.ndarray], **checks: object):
    only_steadiness = {"appearance_check": False, "component_check": False, "motion_check": False}
    return segment_frames(ColourNetwork(0, 1), frames, SIZE, torch.device("cpu"), "border", flow=_still_flow(),
                          original=ColourNetwork(0), **only_steadiness, **checks)


def test_masks_that_flicker_are_replaced_by_the_original_ones() -> None:
    """The adapted network takes a patch that comes and goes from frame to frame: its masks flicker, the
    original's (the red square only) do not, so the original's are returned, and the result says so."""
    frames = _frames(green_in={1, 3, 5})
    unchecked = np.stack(list(_segment(frames, steadiness_check=False)))
    segmented = _segment(frames)
    checked = np.stack(list(segmented))
    originals = np.stack(list(segment_frames(ColourNetwork(0), frames, SIZE, torch.device("cpu"), "border")))
    assert (unchecked & ~originals).any()  # the adapted masks do take the patch
    assert np.array_equal(checked, originals)
    assert segmented.reverted
    assert segmented.steadiness.original_flicker == pytest.approx(0.0)
    assert segmented.steadiness.adapted_flicker > 0.3  # IoU 16² / (16² + 12²) in every pair


def test_masks_that_grow_steadily_stay() -> None:
    """The same adapted network on a video where the patch is there in every frame: steady, kept."""
    frames = _frames(green_in=set(range(FRAMES)))
    segmented = _segment(frames)
    checked = np.stack(list(segmented))
    assert not segmented.reverted
    assert checked[:, 18:30, 8:20].all()  # the adapted network's growth is there
    assert segmented.steadiness == Steadiness(original_flicker=0.0, adapted_flicker=0.0)


def test_the_adapted_masks_may_flicker_up_to_twice_as_much() -> None:
    assert FLICKER_FACTOR == 2.0
    assert Steadiness(original_flicker=0.1, adapted_flicker=0.2).steady
    assert not Steadiness(original_flicker=0.1, adapted_flicker=0.21).steady
    assert Steadiness(original_flicker=0.3, adapted_flicker=0.1).steady


def test_nothing_is_measured_without_the_next_frames_flow() -> None:
    masks = torch.rand(FRAMES, *SIZE)
    assert measure_steadiness(masks, masks, _still_flow(gaps=(-2, -1))) is None
    assert measure_steadiness(masks[:1], masks[:1], _still_flow(frames=1)) is None  # one frame: no neighbour
    with pytest.raises(ValueError, match="differ"):
        measure_steadiness(masks, masks[:2], _still_flow())
