"""ONNX export (training/export.py): parity with PyTorch, metadata, dynamic batch."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from models.segmenters import build_segmenter
from models.spec import ModelSpec
from training.export import export_onnx, onnx_parity, read_metadata

onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    options = {"num_regions": 3, "width": 4, "depth": 2}
    model = build_segmenter("unet", **options)
    # non-trivial batch-norm statistics, so that eval mode differs from train mode
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, 48, 80) * 2 + 0.5)
    model.eval()
    spec = ModelSpec("unet", options, input_size=(48, 80), version="test-1.2", merge="border")
    path = export_onnx(model, spec, tmp_path_factory.mktemp("onnx") / "sub" / "model.onnx")
    return model, spec, path


def test_parity(exported):
    model, _, path = exported
    assert path.is_file()
    assert onnx_parity(model, path) < 1e-4
    assert onnx_parity(model, path, batch_size=1, seed=3) < 1e-4


def test_parity_is_relative_to_the_output_scale_and_catches_a_changed_model(exported, tmp_path):
    """Scaled outputs scale the float32 disagreement, not the measure; changed weights are caught."""
    import copy

    model, spec, _ = exported
    scaled = copy.deepcopy(model)
    with torch.no_grad():  # the last convolution x 50: logits ~50x larger, same graph otherwise
        last = [m for m in scaled.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last.weight *= 50
        last.bias *= 50
    path = export_onnx(scaled, spec, tmp_path / "scaled.onnx")
    assert onnx_parity(scaled, path) < 1e-4
    with torch.no_grad():
        last.bias += 0.01  # the PyTorch model moves on; the ONNX file does not
    assert onnx_parity(scaled, path) > 1e-4


def test_metadata(exported):
    _, spec, path = exported
    meta = read_metadata(path)
    for key in ("gwm.input_height", "gwm.input_width", "gwm.mean", "gwm.std", "gwm.num_regions",
                "gwm.model_version", "gwm.architecture", "gwm.merge", "gwm.spec"):
        assert key in meta, key
    assert (int(meta["gwm.input_height"]), int(meta["gwm.input_width"])) == (48, 80)
    assert int(meta["gwm.num_regions"]) == 3
    assert meta["gwm.model_version"] == "test-1.2"
    assert meta["gwm.architecture"] == "unet"
    assert meta["gwm.merge"] == "border"
    assert json.loads(meta["gwm.mean"]) == pytest.approx(spec.mean)
    assert json.loads(meta["gwm.std"]) == pytest.approx(spec.std)
    assert json.loads(meta["gwm.spec"]) == spec.to_dict()
    assert ModelSpec.from_onnx_metadata(meta) == spec


@pytest.mark.parametrize("batch", [1, 3])
def test_dynamic_batch(exported, batch):
    model, _, path = exported
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    image = np.random.default_rng(batch).standard_normal((batch, 3, 48, 80)).astype(np.float32)
    logits, features = session.run(["logits", "features"], {"image": image})
    assert logits.shape == (batch, 3, 48, 80)
    assert features.shape == (batch, model.feature_dim, 12, 20)
    with torch.inference_mode():
        expected_logits, expected_features = model.forward_with_features(torch.from_numpy(image))
    np.testing.assert_allclose(logits, expected_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(features, expected_features.numpy(), atol=1e-4)


def test_backbone_exports_with_parity_at_any_batch(tmp_path):
    """The timm backbone with its mask queries goes through the same exporter, batch still dynamic."""
    torch.manual_seed(0)
    options = {"num_regions": 4, "backbone": "resnet18", "embed_dim": 16}
    model = build_segmenter("backbone", **options).eval()
    path = export_onnx(model, ModelSpec("backbone", options, input_size=(64, 96)), tmp_path / "bb.onnx")
    for batch in (1, 3):
        assert onnx_parity(model, path, batch_size=batch, seed=batch) < 1e-4


def test_export_leaves_the_model_in_eval_mode(tmp_path):
    """export_onnx puts the model in eval mode; the exporter must not flip it back to train mode
    afterwards (it restores the *wrapper's* mode, which is train for a fresh nn.Module), or whoever
    uses the model after exporting it gets batch statistics instead of the running ones."""
    options = {"num_regions": 2, "width": 4, "depth": 2}
    model = build_segmenter("unet", **options).eval()
    image = torch.randn(1, 3, 32, 48)
    with torch.inference_mode():
        before = model(image)
    path = export_onnx(model, ModelSpec("unet", options, input_size=(32, 48)), tmp_path / "m.onnx")
    assert not model.training
    with torch.inference_mode():
        torch.testing.assert_close(model(image), before)
    # a channels-last model (as training leaves it) exports with the same parity
    model = build_segmenter("unet", **options).to(memory_format=torch.channels_last).train()
    path = export_onnx(model, ModelSpec("unet", options, input_size=(32, 48)), tmp_path / "cl.onnx")
    assert not model.training
    assert onnx_parity(model, path) < 1e-4


def test_a_spec_keeping_the_aspect_exports_a_graph_of_any_size_with_parity(exported, tmp_path):
    """The U-Net is fully convolutional: exported for images in their own aspect ratio, the graph takes
    any height and width that are multiples of 16 and matches PyTorch at each."""
    model, spec, _ = exported
    path = export_onnx(model, replace(spec, keep_aspect=True), tmp_path / "any-size.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    height, width = session.get_inputs()[0].shape[2:]
    assert isinstance(height, str) and isinstance(width, str)  # symbolic, not 48 and 80
    for size in [(48, 80), (80, 48), (32, 112)]:
        assert onnx_parity(model, path, size=size) < 1e-4
    assert ModelSpec.from_onnx_metadata(read_metadata(path)).keep_aspect
    fixed = onnxruntime.InferenceSession(str(exported[2]), providers=["CPUExecutionProvider"])
    assert fixed.get_inputs()[0].shape[2:] == [48, 80]  # a spec that stretches keeps its static graph


def test_a_backbone_cannot_be_exported_keeping_the_aspect(tmp_path):
    options = {"num_regions": 4, "backbone": "resnet18", "embed_dim": 16}
    model = build_segmenter("backbone", **options).eval()
    with pytest.raises(ValueError, match="one input size"):
        export_onnx(model, ModelSpec("backbone", options, input_size=(64, 96), keep_aspect=True), tmp_path / "b.onnx")


def test_merge_strategy_is_validated_and_defaults_for_old_checkpoints():
    with pytest.raises(ValueError, match="unknown merge strategy 'vote'"):
        ModelSpec("unet", {"num_regions": 4}, merge="vote")
    legacy = ModelSpec("unet", {"num_regions": 4}).to_dict()
    del legacy["merge"]  # checkpoints written before gwm 0.2
    assert ModelSpec.from_dict(legacy).merge == "spectral"
    assert ModelSpec("unet", {"num_regions": 4}, merge="border").merge == "border"
    del legacy["keep_aspect"]  # checkpoints written before gwm 0.4.1: stretched to the input size
    assert ModelSpec.from_dict(legacy).keep_aspect is False
    del legacy["video_input_size"]  # checkpoints written before gwm 0.5.1: video frames at the input size
    assert ModelSpec.from_dict(legacy).video_size == ModelSpec.from_dict(legacy).input_size


def test_cli_export_records_version_and_merge_in_onnx_and_slim_checkpoint(tmp_path):
    from gwm_cli.main import main
    from training.checkpoint import load_model, save_checkpoint

    options = {"num_regions": 4, "width": 4, "depth": 2}
    model = build_segmenter("unet", **options).eval()
    save_checkpoint(tmp_path / "run.pt", model, ModelSpec("unet", options, input_size=(32, 48), version="dev"))
    code = main(["export", str(tmp_path / "run.pt"), str(tmp_path / "m.onnx"), "--version", "9.9",
                 "--merge", "border", "--aspect", "keep", "--slim-checkpoint", str(tmp_path / "slim.pt")])
    assert code == 0
    meta = read_metadata(tmp_path / "m.onnx")
    assert (meta["gwm.model_version"], meta["gwm.merge"], meta["gwm.keep_aspect"]) == ("9.9", "border", "true")
    _, slim_spec = load_model(tmp_path / "slim.pt")
    assert slim_spec == ModelSpec.from_dict(json.loads(meta["gwm.spec"]))


def test_cli_export_records_another_input_size_the_graph_can_take(tmp_path):
    """``--input-size`` changes the size single images are fed at (the weights stay), in the ONNX
    metadata and the slim checkpoint alike, and video jobs keep the size the network was trained at
    unless ``--video-input-size`` says otherwise; a size the any-size graph cannot take is refused."""
    from gwm_cli.main import main
    from training.checkpoint import load_model, save_checkpoint

    options = {"num_regions": 4, "width": 4, "depth": 2}
    model = build_segmenter("unet", **options).eval()
    save_checkpoint(tmp_path / "run.pt", model, ModelSpec("unet", options, input_size=(32, 48), version="dev"))
    code = main(["export", str(tmp_path / "run.pt"), str(tmp_path / "m.onnx"), "--aspect", "keep",
                 "--input-size", "48x64", "--slim-checkpoint", str(tmp_path / "slim.pt")])
    assert code == 0
    recorded = ModelSpec.from_onnx_metadata(read_metadata(tmp_path / "m.onnx"))
    slim, slim_spec = load_model(tmp_path / "slim.pt")
    assert recorded.input_size == slim_spec.input_size == (48, 64)
    assert recorded.video_size == slim_spec.video_size == (32, 48)
    assert torch.equal(slim.head.weight.float(), model.head.weight.half().float())
    assert main(["export", str(tmp_path / "run.pt"), str(tmp_path / "both.onnx"), "--aspect", "keep",
                 "--input-size", "48x64", "--video-input-size", "64x96"]) == 0
    assert ModelSpec.from_onnx_metadata(read_metadata(tmp_path / "both.onnx")).video_size == (64, 96)
    odd = main(["export", str(tmp_path / "run.pt"), str(tmp_path / "odd.onnx"), "--aspect", "keep",
                "--input-size", "40x64"])
    assert odd == 2 and not (tmp_path / "odd.onnx").exists()


def test_card_of_a_fine_tuned_run_keeps_the_starting_weights_history(tmp_path):
    from gwm_cli.main import main
    from training.checkpoint import save_checkpoint

    options = {"num_regions": 4, "width": 4, "depth": 2}
    model = build_segmenter("unet", **options).eval()
    spec = ModelSpec("unet", options, input_size=(32, 48), version="2.0", merge="border")
    save_checkpoint(tmp_path / "m.pt", model, spec)
    export_onnx(model, spec, tmp_path / "m.onnx")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"init_from": "old.pt", "flow_cache": "cache/flow-dis-fine"}))
    flow = {"method": "raft", "height": 32, "width": 48, "gaps": [-2, -1, 1, 2], "settings": {"iterations": 6}}
    (run / "flow.json").write_text(json.dumps(flow))  # written by gwm train; the cache itself may be gone
    # 200 steps at 2 steps/s then 200 more at 4 steps/s: 100 s + 50 s
    (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 200, "loss": 0.5, "steps_per_s": 2.0},
        {"step": 400, "loss": 0.4, "steps_per_s": 4.0},
        {"step": 400, "J_merged": 0.6, "J_oracle": 0.7},
    ]))
    (run / "eval").mkdir()  # `gwm eval --output run/eval/...` of the same step supersedes the periodic eval
    (run / "eval" / "final.json").write_text(json.dumps(
        {"step": 400, "davis": {"overall": {"merged": {"J_mean": 0.61}, "oracle": {"J_mean": 0.71}}}}))
    earlier = {"version": "1.0", "training": {"steps": 9000, "training_hours": 1.5, "config": {"width": 4}}}
    (tmp_path / "old.card.json").write_text(json.dumps(earlier))
    (tmp_path / "eval.json").write_text(json.dumps({"davis": {"protocol": "davis", "overall": {}}}))
    card = ["card", str(tmp_path / "m.pt"), "--onnx", str(tmp_path / "m.onnx"), "--eval", str(tmp_path / "eval.json"),
            "--output", str(tmp_path / "card.json"), "--initialised-from", str(tmp_path / "old.card.json")]
    assert main([*card, "--run-dir", str(run)]) == 0
    training = json.loads((tmp_path / "card.json").read_text())["training"]
    assert training["steps"] == 400 and training["final_loss"] == 0.4 and training["flow"] == flow
    assert training["learning_curve"] == [{"step": 400, "J_merged": 0.61, "J_oracle": 0.71}]
    assert training["initialised_from"] == {"version": "1.0", **earlier["training"]}
    assert training["total_training_hours"] == pytest.approx(1.5 + 150 / 3600)
    with pytest.raises(SystemExit, match="--run-dir"):
        main([*card, "--training-from", str(tmp_path / "old.card.json")])
    # shipped weights made by `gwm interpolate` of the starting weights and the run's last.pt
    assert main([*card, "--run-dir", str(run), "--interpolation-alpha", "0.5"]) == 0
    interpolation = json.loads((tmp_path / "card.json").read_text())["training"]["weight_interpolation"]
    assert (interpolation["start_version"], interpolation["alpha"]) == ("1.0", 0.5)
    assert interpolation["command"].endswith(f"{run / 'last.pt'} --alpha 0.5")
    # ... or towards the run's weight average (`gwm train --ema-decay`)
    assert main([*card, "--run-dir", str(run), "--interpolation-alpha", "0.5", "--interpolation-end", "ema.pt"]) == 0
    interpolation = json.loads((tmp_path / "card.json").read_text())["training"]["weight_interpolation"]
    assert interpolation["end"] == "ema.pt" and "moving average" in interpolation["method"]
    assert interpolation["command"].endswith(f"{run / 'ema.pt'} --alpha 0.5")
    # ... or with an earlier generation than the run's start: the shipped model that one came from
    (tmp_path / "older.card.json").write_text(json.dumps({"version": "0.9", "training": {}}))
    assert main([*card, "--run-dir", str(run), "--interpolation-alpha", "0.5",
                 "--interpolation-start", str(tmp_path / "older.card.json")]) == 0
    interpolation = json.loads((tmp_path / "card.json").read_text())["training"]["weight_interpolation"]
    assert interpolation["start_version"] == "0.9" and "version 0.9" in interpolation["method"]
    with pytest.raises(SystemExit, match="--interpolation-alpha"):
        main([*card, "--run-dir", str(run), "--interpolation-start", str(tmp_path / "older.card.json")])
    with pytest.raises(SystemExit, match="--initialised-from"):
        main([*card[:-2], "--run-dir", str(run), "--interpolation-alpha", "0.5"])
    with pytest.raises(SystemExit, match="--interpolation-alpha"):  # an end without an alpha is not ignored
        main([*card, "--run-dir", str(run), "--interpolation-end", "ema.pt"])


def test_interpolated_checkpoint_is_the_weighted_mean_of_the_two(tmp_path):
    from gwm_cli.main import main
    from training.checkpoint import load_model, save_checkpoint

    options = {"num_regions": 4, "width": 4, "depth": 2}
    spec = ModelSpec("unet", options, input_size=(32, 48), version="1.0")
    start, end = (build_segmenter("unet", **options) for _ in range(2))
    with torch.no_grad():
        end(torch.randn(2, 3, 32, 48))  # training mode: batch-norm statistics move, its counter too
    save_checkpoint(tmp_path / "start.pt", start.eval(), spec)
    save_checkpoint(tmp_path / "end.pt", end.eval(), replace(spec, version="1.1"))
    code = main(["interpolate", str(tmp_path / "start.pt"), str(tmp_path / "end.pt"), "--alpha", "0.25",
                 "--version", "2.0", "--output", str(tmp_path / "mid.pt")])
    assert code == 0
    mid, mid_spec = load_model(tmp_path / "mid.pt")
    assert mid_spec == replace(spec, version="2.0")
    a, b = start.state_dict(), end.state_dict()
    for name, value in mid.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.75 * a[name] + 0.25 * b[name])
        else:
            assert torch.equal(value, b[name]), name
    assert any(not torch.equal(a[name], b[name]) for name in a if "running_mean" in name)


def test_several_ends_are_averaged_before_the_interpolation(tmp_path):
    """`gwm interpolate START END1 END2`: runs of one recipe with different seeds make one soup, so the
    candidate is (1 - alpha) START + alpha (END1 + END2) / 2 and no seed is picked by its score."""
    from gwm_cli.main import main
    from training.checkpoint import load_model, save_checkpoint

    options = {"num_regions": 4, "width": 4, "depth": 2}
    spec = ModelSpec("unet", options, input_size=(32, 48), version="1.0")
    networks = [build_segmenter("unet", **options) for _ in range(3)]
    for version, network in zip(("1.0", "1.1", "1.2"), networks):
        if version != "1.0":
            with torch.no_grad():  # training mode: each end's batch-norm statistics move its own way
                network(torch.randn(2, 3, 32, 48))
        save_checkpoint(tmp_path / f"{version}.pt", network.eval(), replace(spec, version=version))
    code = main(["interpolate", *(str(tmp_path / f"{v}.pt") for v in ("1.0", "1.1", "1.2")), "--alpha", "0.25",
                 "--output", str(tmp_path / "mid.pt")])
    assert code == 0
    mid, mid_spec = load_model(tmp_path / "mid.pt")
    assert mid_spec.version == "1.1"  # the first end's
    a, b, c = (network.state_dict() for network in networks)
    for name, value in mid.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.75 * a[name] + 0.125 * b[name] + 0.125 * c[name])
        else:
            assert torch.equal(value, b[name]), name
    assert any(not torch.equal(b[name], c[name]) for name in b if "running_mean" in name)


def test_interpolate_weights_is_the_weighted_midpoint_and_keeps_counters():
    start = {"w": torch.zeros(3), "bn.num_batches_tracked": torch.tensor(0)}
    end = {"w": torch.tensor([2.0, 4.0, -2.0]), "bn.num_batches_tracked": torch.tensor(20)}
    from training.checkpoint import interpolate_weights

    mixed = interpolate_weights(start, end, 0.25)
    assert torch.allclose(mixed["w"], torch.tensor([0.5, 1.0, -0.5]))
    assert mixed["bn.num_batches_tracked"].item() == 20


def test_only_the_same_network_interpolates(tmp_path):
    from training.checkpoint import interpolate_checkpoints, save_checkpoint

    for width in (4, 8):
        options = {"num_regions": 4, "width": width, "depth": 2}
        save_checkpoint(tmp_path / f"w{width}.pt", build_segmenter("unet", **options), ModelSpec("unet", options, (32, 48)))
    with pytest.raises(ValueError, match="different networks"):
        interpolate_checkpoints(tmp_path / "w4.pt", tmp_path / "w8.pt", tmp_path / "mid.pt")
    with pytest.raises(ValueError, match="different networks"):  # among the ends of a soup too
        interpolate_checkpoints(tmp_path / "w4.pt", [tmp_path / "w4.pt", tmp_path / "w8.pt"], tmp_path / "mid.pt")
    with pytest.raises(ValueError, match="alpha"):
        interpolate_checkpoints(tmp_path / "w4.pt", tmp_path / "w4.pt", tmp_path / "mid.pt", alpha=1.5)


def test_widened_checkpoint_records_its_width_and_computes_the_same(tmp_path, caplog):
    """`gwm widen`: the checkpoint a run starts from with `gwm train --init-from OUT --width 8`."""
    from gwm_cli.main import main
    from training.checkpoint import load_model, save_checkpoint

    options = {"num_regions": 4, "width": 4, "depth": 2}
    spec = ModelSpec("unet", options, input_size=(32, 48), version="1.0")
    narrow = build_segmenter("unet", **options)
    with torch.no_grad():
        narrow(torch.randn(2, 3, 32, 48))  # training mode: batch-norm statistics that are not the defaults
    save_checkpoint(tmp_path / "narrow.pt", narrow.eval(), spec)
    assert main(["widen", str(tmp_path / "narrow.pt"), "--width", "8", "--output", str(tmp_path / "wide.pt")]) == 0
    wide, wide_spec = load_model(tmp_path / "wide.pt")
    assert wide_spec == replace(spec, options={**options, "width": 8})
    image = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(wide(image), narrow(image), atol=1e-4, rtol=1e-4)
    assert main(["widen", str(tmp_path / "wide.pt"), "--width", "4", "--output", str(tmp_path / "back.pt")]) == 2
    assert "cannot be widened" in caplog.text and not (tmp_path / "back.pt").exists()
