"""The training loop (training/train.py): learning-rate schedule, exact resume after an interruption,
and test-time adaptation (training/adapt.py)."""

from __future__ import annotations

import dataclasses
import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training_evaluate import write_fake_davis

import training.train as train_module
from models.segmenters import build_segmenter
from models.spec import ModelSpec
from training.adapt import AdaptationCancelled, AdaptationSettings, adapt, adapt_and_segment
from training.checkpoint import load_checkpoint, save_checkpoint
from training.data import FlowPairDataset
from training.flow import DISFlow
from training.flow_cache import PAPER_GAPS, FlowCache, FlowCacheSpec
from training.frames import list_sequences, read_rgb
from training.train import TrainConfig, learning_rate, train


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_learning_rate_schedule():
    config = TrainConfig(lr=7e-4, warmup_start_lr=1e-6, warmup_steps=100, steps=1000, poly_power=0.9)
    assert learning_rate(0, config) == pytest.approx(1e-6)
    assert learning_rate(50, config) == pytest.approx(1e-6 + (7e-4 - 1e-6) / 2)
    assert learning_rate(100, config) == pytest.approx(7e-4)
    assert learning_rate(550, config) == pytest.approx(7e-4 * 0.5**0.9)
    assert learning_rate(1000, config) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(1500, config) == 0.0
    rates = [learning_rate(s, config) for s in range(1001)]
    assert max(rates) == pytest.approx(7e-4) and int(np.argmax(rates)) == 100
    assert all(a <= b for a, b in pairwise(rates[:101]))  # warm-up rises
    assert all(a >= b for a, b in pairwise(rates[100:]))  # decay falls
    # an explicit horizon (the reference's 160k horizon stopped at 20k steps) keeps the rate up
    long = TrainConfig(lr=1.5e-4, warmup_steps=1500, steps=20_000, decay_horizon=160_000)
    assert learning_rate(20_000, long) == pytest.approx(1.5e-4 * (1 - 18_500 / 158_500) ** 0.9)


@pytest.fixture(scope="module")
def tiny_training_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    davis = write_fake_davis(root / "davis", sequences=("alpha", "beta"), frames=4, size=(32, 48))
    spec = FlowCacheSpec("dis-ultrafast", 16, 24, gaps=(-1, 1))
    FlowCache(root / "cache", spec).build(list_sequences(davis, "240p", ["train"]), DISFlow("ultrafast"),
                                          progress=False)
    return davis, root / "cache"


def _config(data, out, **overrides) -> TrainConfig:
    davis, cache = data
    settings = {"data": [f"{davis}:train"], "eval_data": str(davis), "flow_cache": str(cache), "output_dir": str(out),
                "width": 4, "num_regions": 3, "input_size": (32, 48), "steps": 6, "batch_size": 3, "warmup_steps": 2,
                "lr": 1e-3, "checkpoint_every": 3, "log_every": 2, "threads": 1, "device": "cpu", "seed": 3}
    settings.update(overrides)
    return TrainConfig(**settings)


class _Interrupted(Exception):
    pass


def _train_interrupted(config: TrainConfig, monkeypatch, failing_call: int) -> None:
    """Run ``config`` until its ``failing_call``-th training step raises, as a killed run would."""
    real_step = train_module.train_step
    calls = []

    def failing_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == failing_call:
            raise _Interrupted
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", failing_step)
    with pytest.raises(_Interrupted):
        train(config, progress=False)
    monkeypatch.setattr(train_module, "train_step", real_step)


def test_resume_after_interruption_is_exact(tiny_training_data, tmp_path, monkeypatch, restore_threads):
    straight = load_checkpoint(train(_config(tiny_training_data, tmp_path / "a"), progress=False))
    assert straight["step"] == 6

    # same run, killed during step 5 (after the step-3 checkpoint), then resumed
    _train_interrupted(_config(tiny_training_data, tmp_path / "b"), monkeypatch, failing_call=5)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 3
    resumed = load_checkpoint(train(_config(tiny_training_data, tmp_path / "b"), progress=False))

    assert resumed["step"] == 6
    assert resumed["model"].keys() == straight["model"].keys()
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert torch.equal(straight["generator"], resumed["generator"])
    # the weights did change during training (the comparison above is not between two untouched models)
    torch.manual_seed(3)
    fresh = build_segmenter("unet", num_regions=3, width=4).state_dict()
    assert not torch.equal(fresh["head.weight"], straight["model"]["head.weight"])
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4, 6] and all(np.isfinite(r["loss"]) for r in log)
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["steps"] == 6 and config["width"] == 4
    flow = json.loads((tmp_path / "b" / "flow.json").read_text())  # the run directory is self-contained
    assert flow == json.loads((Path(config["flow_cache"]) / "meta.json").read_text())


def test_weight_average_follows_the_run_and_resumes_exactly(tiny_training_data, tmp_path, monkeypatch,
                                                           restore_threads):
    decay = 0.6
    config = _config(tiny_training_data, tmp_path / "ema", steps=4, checkpoint_every=1, snapshot_every=1,
                     ema_decay=decay)
    train(config, progress=False)
    snapshots = [load_checkpoint(tmp_path / "ema" / f"step_{n:06d}.pt")["model"] for n in range(1, 5)]
    expected = [dict(snapshots[0])]  # the first update copies the weights
    for weights in snapshots[1:]:
        expected.append({name: decay * value + (1 - decay) * weights[name] if value.is_floating_point()
                         else weights[name] for name, value in expected[-1].items()})
    averaged = load_checkpoint(tmp_path / "ema" / "ema.pt")
    assert averaged["step"] == 4 and averaged["spec"] == load_checkpoint(tmp_path / "ema" / "last.pt")["spec"]
    for written, want in ((averaged["model"], expected[3]),
                          (load_checkpoint(tmp_path / "ema" / "ema_step_000002.pt")["model"], expected[1])):
        assert written.keys() == want.keys()
        for name, value in want.items():
            if value.is_floating_point():  # batch-norm running statistics are averaged like the weights
                torch.testing.assert_close(written[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.allclose(averaged["model"]["head.weight"], snapshots[-1]["head.weight"])

    # killed during step 3 (after the step-2 checkpoint), resumed: the same average as the straight run
    _train_interrupted(dataclasses.replace(config, output_dir=str(tmp_path / "killed")), monkeypatch, failing_call=3)
    train(dataclasses.replace(config, output_dir=str(tmp_path / "killed")), progress=False)
    resumed = load_checkpoint(tmp_path / "killed" / "ema.pt")["model"]
    for name, value in averaged["model"].items():
        assert torch.equal(value, resumed[name]), name


def test_train_coarse_steps_and_restart(tiny_training_data, tmp_path, restore_threads):
    config = _config(tiny_training_data, tmp_path / "c", steps=2, coarse_steps=1, checkpoint_every=1)
    state = load_checkpoint(train(config, progress=False))
    assert state["step"] == 2 and state["spec"]["input_size"] == [32, 48]
    # resume=False starts over instead of finding the run complete
    longer = _config(tiny_training_data, tmp_path / "c", steps=3, checkpoint_every=1)
    assert load_checkpoint(train(longer, resume=False, progress=False))["step"] == 3


def test_adapt_and_segment_returns_a_mask_per_frame(tmp_path, restore_threads):
    torch.set_num_threads(1)
    davis = write_fake_davis(tmp_path / "davis", sequences=("clip",), frames=4, size=(40, 60))
    frames = [read_rgb(p) for p in list_sequences(davis)[0].frames]
    options = {"num_regions": 3, "width": 4, "depth": 2}
    model = build_segmenter("unet", **options)
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, model, ModelSpec("unet", options, input_size=(32, 48)))
    before = checkpoint.read_bytes()
    stages = []
    result = adapt_and_segment(frames, checkpoint, AdaptationSettings(steps=2, flow_method="dis-ultrafast"),
                               progress=lambda stage, done, total: stages.append((stage, done, total)))
    masks = list(result.masks)
    assert len(masks) == 4 and result.adaptation.decision == "kept"  # too short to hold frames out
    for mask, frame in zip(masks, frames):
        assert mask.shape == frame.shape[:2] and mask.dtype == bool
    assert checkpoint.read_bytes() == before  # the checkpoint is never modified
    assert [s for s in stages if s[0] != "flow"] == [("adapting", 0, 2), ("adapting", 1, 2), ("adapting", 2, 2),
                                                     ("segmenting", 0, 4), ("segmenting", 4, 4)]
    flow = [(done, total) for stage, done, total in stages if stage == "flow"]
    pairs = sum(4 - abs(g) for g in PAPER_GAPS)  # every frame pair of every gap, counted one by one from 0
    assert flow == [(i, pairs) for i in range(pairs + 1)]
    with pytest.raises(ValueError):
        adapt_and_segment(frames[:1], checkpoint, AdaptationSettings(steps=1))


def test_a_portrait_video_is_adapted_at_the_models_fixed_size(tmp_path, restore_threads, monkeypatch):
    """A phone held upright films 9:16. Unlike photos, video frames are fed at the model's input size
    whatever their shape, even when the model keeps photos' aspect ratio: adaptation measured better
    on the stretched frames (training/adapt.py). The masks still come back at the frames' size."""
    import training.adapt

    torch.set_num_threads(1)
    davis = write_fake_davis(tmp_path / "davis", sequences=("clip",), frames=4, size=(80, 45))
    frames = [read_rgb(p) for p in list_sequences(davis)[0].frames]
    options = {"num_regions": 3, "width": 4, "depth": 2}
    save_checkpoint(tmp_path / "model.pt", build_segmenter("unet", **options),
                    ModelSpec("unet", options, input_size=(32, 48), keep_aspect=True))
    grids = []
    segment = training.adapt.segment_frames
    monkeypatch.setattr(training.adapt, "segment_frames",
                        lambda model, frames, input_size, *args, **kwargs:
                        grids.append(input_size) or segment(model, frames, input_size, *args, **kwargs))
    result = adapt_and_segment(frames, tmp_path / "model.pt", AdaptationSettings(steps=2, flow_method="dis-ultrafast"),
                               temporal=True)
    masks = list(result.masks)
    assert grids == [(32, 48)]  # not the photo rule's (48, 32)
    assert result.adaptation.decision == "kept" and all(mask.shape == (80, 45) for mask in masks)


def test_video_jobs_adapt_and_segment_at_the_specs_video_size(tmp_path, restore_threads, monkeypatch):
    """A model fed single images at one size may record another for video jobs (ModelSpec.video_size):
    its flow, its adaptation steps and its masks are all computed on that grid."""
    import training.adapt

    torch.set_num_threads(1)
    frames, _ = _clip_and_checkpoint(tmp_path, 4)
    options = {"num_regions": 3, "width": 4, "depth": 2}
    save_checkpoint(tmp_path / "video.pt", build_segmenter("unet", **options),
                    ModelSpec("unet", options, input_size=(32, 48), video_input_size=(48, 64)))
    grids = []
    segment = training.adapt.segment_frames
    monkeypatch.setattr(training.adapt, "segment_frames",
                        lambda model, frames, input_size, *args, **kwargs:
                        grids.append((input_size, tuple(kwargs["flow"].flows.shape[2:4])))
                        or segment(model, frames, input_size, *args, **kwargs))
    result = adapt_and_segment(frames, tmp_path / "video.pt", AdaptationSettings(steps=2, flow_method="dis-ultrafast"))
    assert grids == [((48, 64), (48, 64))]
    assert result.adaptation.steps == 2 and all(mask.shape == frames[0].shape[:2] for mask in result.masks)


def _clip_and_checkpoint(tmp_path: Path, count: int) -> tuple[list[np.ndarray], Path]:
    """``count`` frames of a fake clip and a tiny U-Net checkpoint to adapt on them."""
    davis = write_fake_davis(tmp_path / "davis", sequences=("clip",), frames=count, size=(40, 60))
    options = {"num_regions": 3, "width": 4, "depth": 2}
    save_checkpoint(tmp_path / "model.pt", build_segmenter("unet", **options),
                    ModelSpec("unet", options, input_size=(32, 48)))
    return [read_rgb(p) for p in list_sequences(davis)[0].frames], tmp_path / "model.pt"


def test_cancel_during_flow_stops_at_the_next_frame_pair(tmp_path, restore_threads):
    frames, checkpoint = _clip_and_checkpoint(tmp_path, 6)
    pairs_seen = []
    with pytest.raises(AdaptationCancelled):
        adapt_and_segment(frames, checkpoint, AdaptationSettings(steps=2, flow_method="dis-ultrafast"),
                          progress=lambda stage, done, total: pairs_seen.append(done) if stage == "flow" else None,
                          should_cancel=lambda: len(pairs_seen) >= 4)
    assert pairs_seen == [0, 1, 2, 3]  # the fourth pair was never computed


def test_cancel_during_an_adaptation_step_stops_inside_it(tmp_path, restore_threads):
    """A step takes seconds on a shared CPU: a cancel asked while one runs must not wait for its end."""
    frames, checkpoint = _clip_and_checkpoint(tmp_path, 4)
    reports = []
    polls_in_step = []

    def should_cancel() -> bool:  # true from the second poll of the first step on: one inside it
        if reports and reports[-1] == ("adapting", 0, 2):
            polls_in_step.append(True)
        return len(polls_in_step) >= 2

    with pytest.raises(AdaptationCancelled):
        adapt_and_segment(frames, checkpoint, AdaptationSettings(steps=2, flow_method="dis-ultrafast"),
                          progress=lambda *report: reports.append(report), should_cancel=should_cancel)
    assert reports[-1] == ("adapting", 0, 2)  # the first step never finished


@pytest.mark.parametrize("freeze_norm", [False, True])
def test_adaptation_updates_batch_norm_statistics_unless_frozen(tmp_path, restore_threads, freeze_norm):
    torch.set_num_threads(1)
    davis = write_fake_davis(tmp_path / "davis", sequences=("clip",), frames=4, size=(40, 60))
    frames = [read_rgb(p) for p in list_sequences(davis)[0].frames]
    model = build_segmenter("unet", num_regions=3, width=4, depth=2)
    statistics = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    weights = {k: v.clone() for k, v in model.state_dict().items() if k.endswith(".weight")}
    dataset = FlowPairDataset.from_frames(frames, DISFlow("ultrafast"), (-1, 1), (32, 48))
    report = adapt(model, dataset, AdaptationSettings(steps=2, freeze_norm=freeze_norm), torch.device("cpu"))
    assert len(report.train_losses) == 2 and not model.training
    after = model.state_dict()
    moved = [k for k in statistics if not torch.equal(after[k], statistics[k])]
    assert (not moved) if freeze_norm else len(moved) == len(statistics)
    assert any(not torch.equal(after[k], weights[k]) for k in weights)  # learning happens either way


def test_train_starts_a_backbone_from_a_local_pretrained_file(tiny_training_data, tmp_path, restore_threads):
    """``gwm train --architecture backbone --backbone NAME --backbone-weights FILE`` builds NAME with the
    file's weights (nothing downloaded), and the model it writes rebuilds without that file."""
    import timm

    from gwm_cli.main import main
    from training.checkpoint import load_model

    pretrained = timm.create_model("test_resnet")  # a tiny timm network, built locally
    weights = tmp_path / "test_resnet.pth"
    torch.save(pretrained.state_dict(), weights)
    davis, cache = tiny_training_data
    out = tmp_path / "run"
    assert main(["train", "--data", f"{davis}:train", "--eval-data", str(davis), "--flow-cache", str(cache),
                 "--output-dir", str(out), "--architecture", "backbone", "--backbone", "test_resnet",
                 "--backbone-weights", str(weights), "--num-regions", "3", "--input-size", "32x48",
                 "--steps", "1", "--batch-size", "2", "--threads", "1", "--device", "cpu"]) == 0
    state = load_checkpoint(out / "last.pt")
    assert state["spec"]["options"] == {"num_regions": 3, "backbone": "test_resnet", "image_size": [32, 48]}
    convolutions = {k: v for k, v in pretrained.state_dict().items() if v.ndim == 4}
    assert convolutions
    for name, tensor in convolutions.items():  # one step at the warm-up's 1e-6 barely moves them
        torch.testing.assert_close(state["model"][f"backbone.{name}"], tensor, atol=1e-4, rtol=0)
    weights.unlink()
    model, spec = load_model(out / "last.pt")
    assert spec.options["backbone"] == "test_resnet" and model.num_regions == 3


def test_backbone_weights_need_the_backbone_architecture():
    with pytest.raises(ValueError, match="backbone weights"):
        TrainConfig(architecture="unet", backbone_weights="resnet.pth").initial_segmenter_options()
