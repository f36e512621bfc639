"""Regression guard for the shipped default model (models/weights/).

The floor is far below the model card's measured val-dev J: it catches a broken export, a changed
pre-processing or merging step, or weights that were replaced by accident — not small regressions,
which `gwm eval` measures.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers.paths import DAVIS, WEIGHTS
from models.merge_strategy import MergeStrategy
from models.spec import ModelSpec
from service.inference import OnnxSegmenter
from training.checkpoint import load_model
from training.export import read_metadata
from training.frames import read_rgb

#: (sequence, frame) pairs spread over val-dev: large and small objects, fast and slow motion.
FRAMES = [("blackswan", 20), ("car-roundabout", 30), ("cows", 40), ("motocross-jump", 20),
          ("dance-twirl", 30), ("scooter-black", 20)]
#: The shipped model 0.1.1 (card: val-dev J 53.7) scores a mean IoU of 0.587 on these frames.
IOU_FLOOR = 0.3


@pytest.fixture(scope="module")
def segmenter() -> OnnxSegmenter:
    return OnnxSegmenter(WEIGHTS / "gwm-default.onnx", device="cpu")


def test_shipped_files_load_with_their_spec() -> None:
    """The shipped checkpoint and ONNX file were written before ModelSpec was a class; both must still
    load, unchanged, and describe the same model."""
    expected = ModelSpec("unet", {"num_regions": 4, "width": 16}, input_size=(112, 192), version="0.6.0",
                         merge=MergeStrategy.BORDER, keep_aspect=True, video_input_size=(128, 224))
    model, checkpoint_spec = load_model(WEIGHTS / "gwm-default.pt")
    onnx_spec = ModelSpec.from_onnx_metadata(read_metadata(WEIGHTS / "gwm-default.onnx"))
    assert checkpoint_spec == onnx_spec == expected
    assert (checkpoint_spec.num_regions, model.num_regions) == (4, 4)


def test_card_matches_the_shipped_model(segmenter: OnnxSegmenter) -> None:
    card = json.loads((WEIGHTS / "gwm-default.card.json").read_text())
    assert card["version"] == segmenter.info.version
    assert tuple(card["architecture"]["input_size"]) == segmenter.info.input_size
    assert tuple(card["architecture"]["video_input_size"]) == segmenter.spec.video_size
    assert card["architecture"]["merge"] == segmenter.info.merge
    assert card["architecture"]["keep_aspect"] == segmenter.spec.keep_aspect
    assert card["evaluation"]["davis_val_dev"]["merged"]["J_mean"] > IOU_FLOOR


@pytest.mark.skipif(not DAVIS.is_dir(), reason=f"{DAVIS} is not beside the repository")
def test_shipped_onnx_segments_val_dev_frames(segmenter: OnnxSegmenter) -> None:
    images = [read_rgb(DAVIS / "JPEGImages" / "240p" / seq / f"{i:05d}.jpg") for seq, i in FRAMES]
    truths = [read_rgb(DAVIS / "Annotations" / "480p" / seq / f"{i:05d}.png")[..., 0] > 127 for seq, i in FRAMES]
    masks = [s.mask for s in segmenter.segment(images)]
    ious = []
    for mask, truth in zip(masks, truths):
        assert mask.shape == images[0].shape[:2]
        # the annotation is 2x the frame: compare at the annotation's resolution
        upsampled = np.kron(mask, np.ones((2, 2), bool))[: truth.shape[0], : truth.shape[1]]
        ious.append((upsampled & truth).sum() / max((upsampled | truth).sum(), 1))
    assert np.mean(ious) > IOU_FLOOR, f"per-frame IoU {np.round(ious, 2)}"


@pytest.mark.skipif(not DAVIS.is_dir(), reason=f"{DAVIS} is not beside the repository")
def test_shipped_onnx_segments_portrait_crops_at_their_own_aspect(segmenter: OnnxSegmenter) -> None:
    """9:16 crops of the same frames, around the object, as a phone held upright films them: the
    graph takes them at 192×112 (not stretched to 112×192) and still finds the object."""
    ious = []
    for seq, i in FRAMES:
        image = read_rgb(DAVIS / "JPEGImages" / "240p" / seq / f"{i:05d}.jpg")
        truth = (read_rgb(DAVIS / "Annotations" / "480p" / seq / f"{i:05d}.png")[..., 0] > 127)[::2, ::2]
        centre = int(np.nonzero(truth)[1].mean())
        left = int(np.clip(centre - 67, 0, image.shape[1] - 135))
        crop, truth = image[:, left:left + 135], truth[: image.shape[0], left:left + 135]
        assert segmenter.prepare(crop).shape == (3, 192, 112)
        mask = segmenter.segment([crop])[0].mask
        assert mask.shape == crop.shape[:2]
        ious.append((mask & truth).sum() / max((mask | truth).sum(), 1))
    assert np.mean(ious) > IOU_FLOOR, f"per-frame IoU {np.round(ious, 2)}"
