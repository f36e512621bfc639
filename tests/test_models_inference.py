"""models/inference.py: the networks run on every frame at once; the full-size masks come one at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.inference import segment_frames
from models.segmenters import build_segmenter

SIZE = (32, 48)


class Stop(Exception):
    pass


def _frames(n: int) -> list[np.ndarray]:
    return [np.random.default_rng(i).integers(0, 256, (60, 90, 3), dtype=np.uint8) for i in range(n)]


def test_full_size_masks_are_made_on_demand_and_a_cancel_stops_between_them() -> None:
    torch.manual_seed(0)
    model = build_segmenter("unet", num_regions=4, width=8).eval()
    frames = _frames(5)
    progress: list[tuple[int, int]] = []
    polls = 0
    cancel_after: int | None = None

    def check_cancel() -> None:
        nonlocal polls
        polls += 1
        if cancel_after is not None and polls > cancel_after:
            raise Stop

    masks = segment_frames(model, frames, SIZE, torch.device("cpu"), "border", batch_size=2,
                           progress=lambda *report: progress.append(report), check_cancel=check_cancel)
    assert progress[-1] == (5, 5)  # the networks have run on every frame (3 batches, 3 polls)...
    assert polls == 3  # ...and not one full-size mask was made yet
    first = next(masks)
    assert first.shape == (60, 90) and first.dtype == bool and polls == 4
    cancel_after = polls + 1  # one more mask, then the cancel
    assert next(masks).shape == (60, 90)
    with pytest.raises(Stop):
        next(masks)


def test_the_masks_are_those_of_one_full_pass() -> None:
    torch.manual_seed(0)
    model = build_segmenter("unet", num_regions=4, width=8).eval()
    frames = _frames(4)
    batched = list(segment_frames(model, frames, SIZE, torch.device("cpu"), "border", batch_size=3))
    single = [next(segment_frames(model, [frame], SIZE, torch.device("cpu"), "border")) for frame in frames]
    assert len(batched) == 4 and all(np.array_equal(a, b) for a, b in zip(batched, single, strict=True))
