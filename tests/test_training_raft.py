"""RAFT-small from the official weights (training/raft.py), on the real file in ../shared/weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_training_flow import _translated_pair

from helpers.paths import DAVIS, SHARED
from models.motion import coordinate_basis, fit_motion, motion_residuals
from models.preprocessing import DEFAULT_INPUT_SIZE, resize_flow
from training.evaluate import read_annotation
from training.flow import build_flow_estimator
from training.frames import list_sequences
from training.raft import RAFTFlow, load_raft, translate_official_raft

WEIGHTS = SHARED / "weights" / "raft-small.pth"

pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"RAFT weights not found at {WEIGHTS}")


@pytest.fixture(scope="module")
def raft() -> RAFTFlow:
    torch.set_num_threads(1)
    return RAFTFlow(WEIGHTS)


def test_official_weights_load_strictly_onto_torchvision_raft_small():
    official = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert all(k.startswith("module.") for k in official)
    model = load_raft(WEIGHTS)
    state = model.state_dict()
    translated = translate_official_raft(official)
    assert set(translated) == set(state)  # every tensor found its place, every place is filled
    for name, tensor in translated.items():
        assert torch.equal(state[name], tensor), name
    assert model.context_encoder.conv.weight.shape[0] == 160  # RAFT-small: 96 hidden + 64 context


def test_a_truncated_or_foreign_file_is_refused(tmp_path):
    official = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    missing = dict(official)
    missing.pop("module.update_block.flow_head.conv2.bias")
    torch.save(missing, tmp_path / "truncated.pth")
    with pytest.raises(RuntimeError, match="Missing key"):
        load_raft(tmp_path / "truncated.pth")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "foreign.pth")
    with pytest.raises(ValueError, match="RAFT"):
        load_raft(tmp_path / "foreign.pth")
    with pytest.raises(FileNotFoundError):
        load_raft(tmp_path / "absent.pth")


@pytest.mark.parametrize("scale", [1.0, 1.5])
def test_raft_recovers_a_translation_within_half_a_pixel(raft, scale):
    a, b = _translated_pair(size=(128, 192))
    raft.scale = scale
    try:
        flow = raft(a, b)
    finally:
        raft.scale = 1.0
    assert flow.shape == (128, 192, 2) and flow.dtype == np.float32
    interior = flow[16:-16, 16:-16].reshape(-1, 2)
    assert np.median(interior, axis=0) == pytest.approx([3.0, -2.0], abs=0.5)


def test_raft_is_built_by_name_with_its_options():
    estimator = build_flow_estimator("raft", weights=str(WEIGHTS), iterations=3, scale=0.5)
    assert isinstance(estimator, RAFTFlow) and estimator.iterations == 3 and estimator.scale == 0.5
    with pytest.raises(ValueError, match="iteration"):
        RAFTFlow(WEIGHTS, iterations=0)


@pytest.mark.skipif(not (DAVIS / "Annotations").is_dir(), reason="DAVIS annotations not found")
def test_raft_explains_the_background_of_a_davis_pair_no_worse_than_dis(raft):
    """The quadratic motion model fitted on the true background leaves a residual there; RAFT's
    smoother, more accurate field must leave no more than DIS's (paper: better flow, better GWM)."""
    video = next(v for v in list_sequences(DAVIS, "240p", ["val-dev"]) if v.name == "car-shadow")
    index = 20
    grid = DEFAULT_INPUT_SIZE
    truth = torch.nn.functional.interpolate(
        torch.from_numpy(read_annotation(DAVIS, video, index))[None, None].float(), size=grid, mode="area")[0, 0] > 0.5
    background = (~truth).float().reshape(1, 1, -1)
    basis = coordinate_basis(*grid, "quadratic")

    def background_residual(flow: np.ndarray) -> float:
        field = torch.from_numpy(resize_flow(flow, grid)).reshape(1, -1, 2)
        residual = motion_residuals(field, basis, fit_motion(background, field, basis))[0, 0]
        return float(residual[background[0, 0] > 0].mean())

    a, b = video.read(index), video.read(index + 1)
    raft_residual = background_residual(raft(a, b))
    dis_residual = background_residual(build_flow_estimator("dis-fine")(a, b))
    assert raft_residual <= dis_residual
