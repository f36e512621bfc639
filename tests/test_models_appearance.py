"""The appearance check (models/appearance.py): adapted masks may grow into the object's colours,
not into the background's — a wake, a shadow — and may shrink anywhere."""

from __future__ import annotations

import numpy as np
import torch

from models.appearance import BINS, ColourHistograms, colour_indices, restrict_growth
from models.inference import segment_frames
from models.segmenters import build_segmenter

SIZE = (32, 48)
RED, BLUE, DARK_BLUE = (200, 30, 30), (40, 60, 200), (30, 45, 170)


def _scene() -> tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A red object on blue water, a darker-blue wake behind it; the original foreground covers the
    left half of the object only. Returns the frame, the object, the wake and the original soft mask."""
    frame = np.empty((*SIZE, 3), np.uint8)
    frame[:] = BLUE
    obj, wake = torch.zeros(SIZE, dtype=torch.bool), torch.zeros(SIZE, dtype=torch.bool)
    obj[10:22, 16:32] = True
    wake[12:20, 32:46] = True
    frame[obj.numpy()] = RED
    frame[wake.numpy()] = DARK_BLUE
    original = torch.full(SIZE, 0.05)
    original[10:22, 16:24] = 0.9
    return frame, obj, wake, original


def test_colour_indices_quantise_lab_per_pixel() -> None:
    frame, obj, _, _ = _scene()
    indices = colour_indices([frame, frame[::-1].copy()], SIZE)
    assert indices.shape == (2, *SIZE) and indices.dtype == torch.int64
    assert 0 <= int(indices.min()) and int(indices.max()) < BINS ** 3
    inside, outside = indices[0][obj], indices[0][~obj]
    assert inside.unique().numel() == 1 and int(inside[0]) not in outside.tolist()  # red is its own colour
    assert torch.equal(indices[1], indices[0].flip(0))


def test_background_colours_are_background_like() -> None:
    frame, obj, wake, original = _scene()
    indices = colour_indices([frame], SIZE)
    held = ColourHistograms.of(indices, original[None]).background_like(indices)[0]
    assert not held[obj].any()  # red: owned by the foreground, though half the object is missed
    assert held[wake].all() and held[~(obj | wake)].all()


def test_growth_into_the_wake_is_held_and_into_the_object_is_kept() -> None:
    frame, obj, wake, original = _scene()
    adapted = original.clone()
    adapted[obj | wake] = 0.95  # adaptation took the whole object, and the wake with it
    result = restrict_growth(adapted[None], original[None], colour_indices([frame], SIZE))[0]
    assert torch.equal(result[obj], adapted[obj])
    assert torch.equal(result[wake], original[wake])


def test_the_videos_colours_hold_the_wake_in_a_frame_whose_own_masks_missed_the_object() -> None:
    """Pooled over the video: in the second frame the original network saw no object, so that frame's
    own histograms cannot tell the wake from the object; the first frame's can."""
    frame, obj, wake, original = _scene()
    missed = torch.full(SIZE, 0.05)  # nothing found in the second frame
    indices = colour_indices([frame, frame], SIZE)
    adapted = torch.stack([original, missed]).clone()
    adapted[:, obj | wake] = 0.95
    alone = restrict_growth(adapted[1:], missed[None], indices[1:])[0]  # that frame's own histograms
    assert torch.equal(alone[wake], adapted[1][wake])  # uniform weights: no colour is background-like
    pooled = restrict_growth(adapted, torch.stack([original, missed]), indices)[1]
    assert torch.equal(pooled[wake], missed[wake]) and torch.equal(pooled[obj], adapted[1][obj])


def test_segment_frames_counts_the_colours_of_every_batch_before_holding_any() -> None:
    """The histograms are the whole video's, whatever the batch size of the networks' passes."""
    torch.manual_seed(0)
    original = build_segmenter("unet", num_regions=4, width=8).eval()
    adapted = build_segmenter("unet", num_regions=4, width=8).eval()
    frames = [np.random.default_rng(i).integers(0, 256, (40, 60, 3), dtype=np.uint8) for i in range(5)]
    appearance_only = {"original": original, "component_check": False, "motion_check": False,
                       "steadiness_check": False}
    whole = list(segment_frames(adapted, frames, SIZE, torch.device("cpu"), "border", **appearance_only, batch_size=8))
    batched = list(segment_frames(adapted, frames, SIZE, torch.device("cpu"), "border", **appearance_only, batch_size=2))
    plain = list(segment_frames(adapted, frames, SIZE, torch.device("cpu"), "border"))
    assert all(np.array_equal(a, b) for a, b in zip(whole, batched))
    assert not all(np.array_equal(a, b) for a, b in zip(whole, plain))  # the check did hold something


def test_shrinking_is_never_held() -> None:
    frame, _, _, original = _scene()
    adapted = original * 0.5
    assert torch.equal(restrict_growth(adapted[None], original[None], colour_indices([frame], SIZE))[0], adapted)


def test_segment_frames_is_unchanged_when_the_network_did_not_move() -> None:
    torch.manual_seed(0)
    model = build_segmenter("unet", num_regions=4, width=8).eval()
    frames = [np.random.default_rng(i).integers(0, 256, (40, 60, 3), dtype=np.uint8) for i in range(3)]
    plain = list(segment_frames(model, frames, SIZE, torch.device("cpu"), "border"))
    checked = list(segment_frames(model, frames, SIZE, torch.device("cpu"), "border", original=model,
                                  component_check=False, motion_check=False, steadiness_check=False))
    assert all(np.array_equal(a, b) for a, b in zip(plain, checked))
