"""The adaptation safeguard (training/adapt.py): weights that explain held-out frames' motion better
are kept; adaptation on flow that nothing can explain is reverted to the original weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_training_synthetic import GAPS, HEIGHT, WIDTH, make_video

from models.inference import segment_frames
from models.preprocessing import prepare_image
from models.segmenters import build_segmenter
from models.video_flow import VideoFlow
from training.adapt import AdaptationSettings, adapt, heldout_frames, heldout_loss, run_adaptation_steps, settle
from training.data import FlowPairDataset
from training.train import LossFunction

SETTINGS = AdaptationSettings(steps=20, batch_size=8, lr=1e-2, holdout_every=4, check_every=5)


def _dataset(flows: np.ndarray, valid: np.ndarray, frames: np.ndarray) -> FlowPairDataset:
    images = torch.from_numpy(np.stack([prepare_image(f, (HEIGHT, WIDTH)) for f in frames]))
    return FlowPairDataset(images, VideoFlow(torch.from_numpy(flows).half(), torch.from_numpy(valid), GAPS))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_segmenter("unet", num_regions=2, width=8).eval()


def test_flow_runs_at_the_network_grid_for_classical_flow_and_at_240p_for_raft():
    """What GWM_FLOW_SIZE unset means (training.flow.video_flow_size); a size set wins."""
    assert AdaptationSettings().flow_frame_size((128, 224)) == (128, 224)
    assert AdaptationSettings(flow_method="farneback").flow_frame_size((96, 160)) == (96, 160)
    assert AdaptationSettings(flow_method="raft").flow_frame_size((128, 224)) == (240, 427)
    assert AdaptationSettings(flow_size=(240, 427)).flow_frame_size((128, 224)) == (240, 427)


def test_heldout_frames_spare_the_ends_and_short_videos():
    assert heldout_frames(20, 5).tolist() == [2, 7, 12, 17]
    assert heldout_frames(9, 5).numel() == 0  # fewer than two periods: nothing to spare
    assert heldout_frames(50, 0).numel() == 0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_adaptation_on_real_motion_is_kept(single_thread, seed):
    frames, _, flows, valid = make_video(0)
    model = _model()
    # any seed; 40 steps: the network is untrained, its batch-norm statistics lag in inference mode, and
    # after 20 steps the held-out drop of some seeds is still within the keep margin
    settings = dataclasses.replace(SETTINGS, steps=40, seed=seed)
    report = adapt(model, _dataset(flows, valid, frames), settings, torch.device("cpu"))
    assert report.decision == "kept" and report.best_step > 0
    assert report.heldout_frames == 3
    assert report.heldout_loss_after < 0.98 * report.heldout_loss_before
    assert report.appearance_check  # kept weights segment behind the appearance check (models/appearance.py)
    assert report.component_check  # and the component check (models/connectivity.py)
    assert report.motion_check  # and the motion check (models/motion_check.py), all on by default
    assert report.reverted_by is None and report.flicker_before is None  # the steadiness check: when segmenting
    assert not model.training


def test_adaptation_on_noise_flow_is_reverted_and_segments_as_before(single_thread):
    frames, _, flows, valid = make_video(0)
    noise = np.random.default_rng(1).normal(0, 2.0, flows.shape).astype(np.float32) * valid[..., None, None, None]
    model = _model()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    before = list(segment_frames(model, list(frames), (HEIGHT, WIDTH), torch.device("cpu"), "border"))
    report = adapt(model, _dataset(noise, valid, frames), SETTINGS, torch.device("cpu"))
    assert report.decision == "reverted" and report.best_step == 0 and report.reverted_by == "heldout_loss"
    # the original weights have nothing to be checked against
    assert not report.appearance_check and not report.component_check and not report.motion_check
    assert len(report.train_losses) == SETTINGS.steps  # it did adapt, then threw the result away
    assert all(torch.equal(model.state_dict()[k], v) for k, v in original.items())
    after = list(segment_frames(model, list(frames), (HEIGHT, WIDTH), torch.device("cpu"), "border"))
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_without_holdout_the_adapted_weights_are_kept(single_thread):
    frames, _, flows, valid = make_video(0)
    noise = np.random.default_rng(1).normal(0, 2.0, flows.shape).astype(np.float32) * valid[..., None, None, None]
    model = _model()
    report = adapt(model, _dataset(noise, valid, frames),
                   AdaptationSettings(steps=2, holdout_every=0, appearance_check=False, component_check=False,
                                      motion_check=False),
                   torch.device("cpu"))
    assert report.decision == "kept" and report.heldout_frames == 0 and report.best_step == 2
    assert not (report.appearance_check or report.component_check or report.motion_check)  # switched off


def test_trust_check_masks_the_flow_that_fails_the_round_trip():
    frames, _, flows, valid = make_video(0)
    images = torch.from_numpy(np.stack([prepare_image(f, (HEIGHT, WIDTH)) for f in frames]))
    exact = FlowPairDataset(images, VideoFlow(torch.from_numpy(flows), torch.from_numpy(valid), GAPS), trust_check=True)
    batch = exact.sample(8, torch.Generator().manual_seed(0))
    assert batch.confidence.shape == (8, 1, HEIGHT, WIDTH)
    # the disc's flow and the background's flow return home; only occluded and out-of-frame pixels fail
    assert 0.8 < batch.confidence.mean() < 1.0
    noise = np.random.default_rng(1).normal(0, 2.0, flows.shape).astype(np.float32)
    noisy = FlowPairDataset(images, VideoFlow(torch.from_numpy(noise), torch.from_numpy(valid), GAPS), trust_check=True)
    assert noisy.sample(8, torch.Generator().manual_seed(0)).confidence.mean() < 0.3
    assert FlowPairDataset(images, exact.flow).sample(2, torch.Generator()).confidence is None  # off by default


def test_half_step_uses_the_midpoint_of_the_original_and_the_adapted_weights(single_thread):
    frames, _, flows, valid = make_video(0)
    dataset = _dataset(flows, valid, frames)
    settings = AdaptationSettings(steps=4, batch_size=4, lr=1e-2, holdout_every=0)
    original = {k: v.clone() for k, v in _model().state_dict().items()}
    full, half = _model(), _model()
    adapt(full, dataset, dataclasses.replace(settings, interpolation=1.0), torch.device("cpu"))
    report = adapt(half, dataset, dataclasses.replace(settings, interpolation=0.5), torch.device("cpu"))
    assert report.interpolation == 0.5
    for name, value in half.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, (original[name] + full.state_dict()[name]) / 2, atol=1e-6), name
    assert not all(torch.equal(a, b) for a, b in zip(half.parameters(), full.parameters()))


def test_the_safeguard_judges_the_interpolated_weights(single_thread):
    frames, _, flows, valid = make_video(0)
    model = _model()
    report = adapt(model, _dataset(flows, valid, frames), SETTINGS, torch.device("cpu"))
    assert SETTINGS.interpolation == 0.5 and report.decision == "kept"
    assert torch.isclose(torch.tensor(report.heldout_loss_after),
                         torch.tensor(heldout_loss(model, _dataset(flows, valid, frames), heldout_frames(len(frames), 4),
                                                   LossFunction(SETTINGS.train_config(), torch.device("cpu")),
                                                   SETTINGS.scale)), rtol=1e-5)


def test_one_run_of_steps_settled_at_each_interpolation_is_what_adapt_gives(single_thread):
    """bench_adapt --interpolations judges one run of steps at several interpolations: each verdict
    and its weights must be exactly those of a whole adaptation at that interpolation."""
    frames, _, flows, valid = make_video(0)
    dataset = _dataset(flows, valid, frames)
    shared = _model()
    run = run_adaptation_steps(shared, dataset, SETTINGS, torch.device("cpu"))
    for alpha in (0.5, 1.0):
        settings = dataclasses.replace(SETTINGS, interpolation=alpha)
        alone = _model()
        expected = adapt(alone, dataset, settings, torch.device("cpu"))
        report = settle(shared, run, dataset, settings, torch.device("cpu"))
        assert report == expected and report.decision == "kept"
        assert all(torch.equal(a, b) for a, b in zip(shared.state_dict().values(), alone.state_dict().values()))


def _adapted_weights(dataset: FlowPairDataset, settings: AdaptationSettings) -> dict[str, torch.Tensor]:
    """The weights a fresh model ends with after ``adapt`` under ``settings``."""
    model = _model()
    adapt(model, dataset, settings, torch.device("cpu"))
    return model.state_dict()


def _assert_mean_of(state: dict[str, torch.Tensor], states: list[dict[str, torch.Tensor]]) -> None:
    """Every floating-point entry of ``state`` is the mean of ``states``' (batch counters aside)."""
    for name, value in state.items():
        if value.is_floating_point():
            assert torch.allclose(value, sum(other[name] for other in states) / len(states), atol=1e-6), name


def test_several_runs_average_the_weights_of_runs_with_successive_seeds(single_thread):
    """runs=2 is two independent runs of the steps (seeds 3 and 4), each from the original weights, and
    their weights averaged; the progress counts every run's steps."""
    frames, _, flows, valid = make_video(0)
    dataset = _dataset(flows, valid, frames)
    settings = AdaptationSettings(steps=3, batch_size=4, lr=1e-2, holdout_every=0, interpolation=1.0, seed=3)
    singles = [_adapted_weights(dataset, dataclasses.replace(settings, seed=seed)) for seed in (3, 4)]
    assert not torch.equal(singles[0]["head.weight"], singles[1]["head.weight"])  # two different draws
    soup, calls = _model(), []
    report = adapt(soup, dataset, dataclasses.replace(settings, runs=2), torch.device("cpu"),
                   progress=lambda *call: calls.append(call))
    assert report.runs == 2 and report.steps == 3 and len(report.train_losses) == 6
    _assert_mean_of(soup.state_dict(), singles)
    assert calls == [("adapting", done, 6) for done in range(7)]


def test_the_safeguard_judges_the_average_of_several_runs(single_thread):
    frames, _, flows, valid = make_video(0)
    dataset = _dataset(flows, valid, frames)
    for interpolation in (0.5, 1.0):  # with and without the midpoint, the verdict is on the weights used
        model = _model()
        report = adapt(model, dataset, dataclasses.replace(SETTINGS, runs=2, interpolation=interpolation),
                       torch.device("cpu"))
        assert report.decision == "kept"
        measured = heldout_loss(model, dataset, heldout_frames(len(frames), 4),
                                LossFunction(SETTINGS.train_config(), torch.device("cpu")), SETTINGS.scale)
        assert report.heldout_loss_after == pytest.approx(measured, rel=1e-5)
        assert report.heldout_loss_after < 0.98 * report.heldout_loss_before


def test_averaging_the_checked_steps_segments_with_the_mean_of_their_weights(single_thread):
    """average_checked without a safeguard: the weights after steps 2 and 4 of one run, averaged — the
    same as the weights of a 2-step and a 4-step adaptation with that seed."""
    frames, _, flows, valid = make_video(0)
    dataset = _dataset(flows, valid, frames)
    settings = AdaptationSettings(steps=4, batch_size=4, lr=1e-2, holdout_every=0, check_every=2, interpolation=1.0)
    singles = [_adapted_weights(dataset, dataclasses.replace(settings, steps=steps)) for steps in (2, 4)]
    averaged = _model()
    report = adapt(averaged, dataset, dataclasses.replace(settings, average_checked=True), torch.device("cpu"))
    assert report.decision == "kept" and report.best_step == 4
    _assert_mean_of(averaged.state_dict(), singles)
    assert not torch.equal(averaged.state_dict()["head.weight"], singles[1]["head.weight"])


def test_the_safeguard_judges_the_average_of_the_checked_steps(single_thread):
    frames, _, flows, valid = make_video(0)
    dataset = _dataset(flows, valid, frames)
    model = _model()
    report = adapt(model, dataset, dataclasses.replace(SETTINGS, steps=40, average_checked=True), torch.device("cpu"))
    assert report.decision == "kept"
    measured = heldout_loss(model, dataset, heldout_frames(len(frames), 4),
                            LossFunction(SETTINGS.train_config(), torch.device("cpu")), SETTINGS.scale)
    assert report.heldout_loss_after == pytest.approx(measured, rel=1e-5)
    noise = np.random.default_rng(1).normal(0, 2.0, flows.shape).astype(np.float32) * valid[..., None, None, None]
    reverted = adapt(_model(), _dataset(noise, valid, frames), dataclasses.replace(SETTINGS, average_checked=True),
                     torch.device("cpu"))
    assert reverted.decision == "reverted"  # no checked step beat the start: nothing to average


def test_held_encoder_stays_as_it_was_while_the_decoder_adapts(single_thread):
    frames, _, flows, valid = make_video(0)
    model = _model()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    encoder = {id(p) for p in model.encoder_parameters()}
    settings = AdaptationSettings(steps=4, batch_size=4, lr=1e-2, holdout_every=0, adapt_encoder=False)
    adapt(model, _dataset(flows, valid, frames), settings, torch.device("cpu"))
    names = {name: id(p) in encoder for name, p in model.named_parameters()}
    assert any(names.values()) and not all(names.values())
    for name, is_encoder in names.items():
        assert torch.equal(model.state_dict()[name], original[name]) == is_encoder, name
    assert all(p.requires_grad for p in model.parameters())  # trainable again afterwards


def test_fewer_than_one_run_is_refused():
    with pytest.raises(ValueError, match="runs"):
        AdaptationSettings(runs=0)


@pytest.mark.parametrize("interpolation", [0.0, -0.5, 1.5])
def test_interpolation_outside_the_unit_interval_is_refused(interpolation):
    with pytest.raises(ValueError, match="interpolation"):
        AdaptationSettings(interpolation=interpolation)


def test_an_unsteady_adaptation_is_reported_reverted_by_the_steadiness_check():
    """``with_steadiness``: the flickers are reported either way; masks flickering over twice the original's
    turn a kept adaptation into a reverted one, its mask checks not applied (models/steadiness.py)."""
    from models.steadiness import Steadiness
    from training.adapt import AdaptationReport

    kept = AdaptationReport(decision="kept", reverted_by=None, steps=20, runs=1, seed=0, best_step=15, heldout_frames=10,
                            heldout_loss_before=0.3, heldout_loss_after=0.2, interpolation=0.5,
                            appearance_check=True, component_check=True, motion_check=True,
                            flicker_before=None, flicker_after=None, train_losses=[0.3])
    assert kept.with_steadiness(None) is kept
    steady = kept.with_steadiness(Steadiness(original_flicker=0.2, adapted_flicker=0.3))
    assert (steady.decision, steady.flicker_before, steady.flicker_after) == ("kept", 0.2, 0.3)
    unsteady = kept.with_steadiness(Steadiness(original_flicker=0.1, adapted_flicker=0.4))
    assert (unsteady.decision, unsteady.reverted_by, unsteady.best_step) == ("reverted", "steadiness", 0)
    assert not (unsteady.appearance_check or unsteady.component_check or unsteady.motion_check)
    assert unsteady.to_dict()["flicker_after"] == 0.4
