"""Evaluation metrics (training/evaluate.py) against hand-computed values, DAVIS evaluation on a tiny
fake dataset, and checkpoint save/load (training/checkpoint.py)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import training.evaluate as evaluate_module
from models.segmenters import build_segmenter
from models.spec import ModelSpec
from training.checkpoint import load_checkpoint, load_model, save_checkpoint, slim_checkpoint
from training.evaluate import davis_sequence_scores, evaluate_davis, f_beta_curve, format_table, jaccard


def write_fake_davis(root: Path, sequences=("alpha", "beta"), frames: int = 5, size=(48, 64),
                     splits=None, seed: int = 0) -> Path:
    """A DAVIS-style folder: textured background, a textured square moving 2 px/frame to the right.

    JPEGImages/240p/<seq>/%05d.jpg at ``size``, Annotations/480p/<seq>/%05d.png (0/255) at twice the
    size, ImageSets/<split>.txt (default: every sequence in ``val-dev`` and ``train``)."""
    rng = np.random.default_rng(seed)
    h, w = size
    splits = splits or {"val-dev": list(sequences), "train": list(sequences)}
    for index, name in enumerate(sequences):
        background = rng.integers(40, 200, (h, w + 4 * frames, 3), dtype=np.uint8)
        background = np.asarray(Image.fromarray(background).resize((w + 4 * frames, h), Image.BILINEAR))
        square = rng.integers(0, 255, (h // 3, h // 3, 3), dtype=np.uint8)
        frame_dir = root / "JPEGImages" / "240p" / name
        mask_dir = root / "Annotations" / "480p" / name
        frame_dir.mkdir(parents=True)
        mask_dir.mkdir(parents=True)
        for t in range(frames):
            frame = background[:, t:t + w].copy()  # background drifts left 1 px/frame
            y, x = h // 3 + index, w // 4 + 2 * t
            frame[y:y + h // 3, x:x + h // 3] = square
            mask = np.zeros((h, w), np.uint8)
            mask[y:y + h // 3, x:x + h // 3] = 255
            Image.fromarray(frame).save(frame_dir / f"{t:05d}.jpg", quality=95)
            Image.fromarray(mask).resize((2 * w, 2 * h), Image.NEAREST).save(mask_dir / f"{t:05d}.png")
    (root / "ImageSets").mkdir(parents=True, exist_ok=True)
    for split, names in splits.items():
        (root / "ImageSets" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


# --------------------------------------------------------------------------------------- metrics


def test_jaccard_hand_computed():
    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[0, 1, 1, 0]], bool)
    assert jaccard(a, b) == pytest.approx(1 / 3)
    assert jaccard(a, a) == 1.0
    assert jaccard(a, ~a) == 0.0
    empty = np.zeros((2, 2), bool)
    assert jaccard(empty, empty) == 1.0
    assert jaccard(empty, empty, empty_score=0.0) == 0.0
    assert jaccard(empty, np.eye(2, dtype=bool), empty_score=1.0) == 0.0


def test_davis_sequence_scores_hand_computed():
    ious = [1.0, 0.8, 0.6, 0.4, 0.2, 0.0, 0.5, 0.7]
    scores = davis_sequence_scores(ious)
    assert scores["J_mean"] == pytest.approx(4.2 / 8)
    assert scores["J_recall"] == pytest.approx(4 / 8)  # 1.0, 0.8, 0.6, 0.7; 0.5 is not > 0.5
    # decay with the official DAVIS bins: round(linspace(1, 8, 5)) - 1 = [0, 2, 4, 5, 7], bins are
    # inclusive of their right edge, so the first bin is frames 0-2 and the last frames 5-7.
    assert scores["J_decay"] == pytest.approx((1.0 + 0.8 + 0.6) / 3 - (0.0 + 0.5 + 0.7) / 3)
    flat = davis_sequence_scores([0.3, 0.3, 0.3])
    assert flat == pytest.approx({"J_mean": 0.3, "J_recall": 0.0, "J_decay": 0.0})


@pytest.mark.parametrize("ious, decay", [([0.9, 0.5, 0.1], (0.9 + 0.5) / 2 - 0.1), ([0.7, 0.2], 0.5), ([0.4], 0.0)])
def test_davis_decay_is_finite_for_short_sequences(ious, decay):
    """Fewer than four frames must not give NaN (np.array_split into 4 leaves empty quarters)."""
    assert davis_sequence_scores(ious)["J_decay"] == pytest.approx(decay)


def test_f_beta_perfect_prediction():
    truth = np.zeros((6, 6), bool)
    truth[1:4, 2:5] = True
    curve = f_beta_curve([truth.astype(np.float32)], [truth])
    assert curve.shape == (255,)
    assert curve.max() == pytest.approx(1.0)
    assert curve[1:].min() == pytest.approx(1.0)  # every threshold in (0, 1] separates perfectly
    # threshold 0 predicts everything: precision = 9/36, recall = 1
    p = 9 / 36
    assert curve[0] == pytest.approx(1.3 * p / (0.3 * p + 1))


def test_f_beta_known_precision_recall():
    # 4 pixels, 1 positive, constant 0.6: any threshold up to 0.6 predicts all 4 (P = 1/4, R = 1),
    # above it predicts nothing (P = R = 0).
    soft = np.full((2, 2), 0.6, np.float32)
    truth = np.array([[1, 0], [0, 0]], bool)
    curve = f_beta_curve([soft], [truth])
    f = 1.3 * 0.25 * 1.0 / (0.3 * 0.25 + 1.0)
    level = int(0.6 * 255)  # 153
    assert curve[: level + 1] == pytest.approx(np.full(level + 1, f))
    assert curve[level + 1:] == pytest.approx(np.zeros(255 - level - 1))
    # two images: precision and recall are averaged over images before F is formed
    soft2 = np.array([[0.9, 0.1], [0.1, 0.1]], np.float32)  # at t in (0.1, 0.9]: P = 1, R = 1
    curve2 = f_beta_curve([soft, soft2], [truth, truth])
    precision, recall = (0.25 + 1.0) / 2, 1.0
    assert curve2[100] == pytest.approx(1.3 * precision * recall / (0.3 * precision + recall))
    assert curve2.max() == pytest.approx(curve2[100])


# ----------------------------------------------------------------------------------- DAVIS eval


@pytest.fixture(scope="module")
def fake_davis(tmp_path_factory) -> Path:
    return write_fake_davis(tmp_path_factory.mktemp("davis"))


@pytest.fixture(scope="module")
def tiny_unet():
    torch.manual_seed(0)
    return build_segmenter("unet", num_regions=4, width=4, depth=2).eval()


@pytest.mark.parametrize("protocol, frames_per_sequence", [("davis", 3), ("gwm-reference", 2)])
def test_evaluate_davis_structure_and_protocol(fake_davis, tiny_unet, monkeypatch, protocol, frames_per_sequence):
    seen = []
    original = evaluate_module.predict

    def counting_predict(model, images, input_size, device="cpu", merge="spectral"):
        seen.append(len(images))
        assert merge == "border"
        return original(model, images, input_size, device, merge)

    monkeypatch.setattr(evaluate_module, "predict", counting_predict)
    report = evaluate_davis(tiny_unet, fake_davis, (32, 48), split="val-dev", protocol=protocol, progress=False,
                            batch_size=2, merge="border")
    # 5 frames: davis drops the first and last, gwm-reference also drops frame 1
    assert sum(seen) == 2 * frames_per_sequence
    assert report["protocol"] == protocol and report["split"] == "val-dev" and report["merge"] == "border"
    assert set(report["sequences"]) == {"alpha", "beta"}
    for scores in [*report["sequences"].values(), report["overall"]]:
        assert set(scores) == {"merged", "oracle"}
        for kind in ("merged", "oracle"):
            assert set(scores[kind]) == {"J_mean", "J_recall", "J_decay"}
            assert 0 <= scores[kind]["J_mean"] <= 1 and 0 <= scores[kind]["J_recall"] <= 1
            assert -1 <= scores[kind]["J_decay"] <= 1
    for scores in report["sequences"].values():
        # the label-free merge is one of the subsets the oracle considers
        assert scores["oracle"]["J_mean"] >= scores["merged"]["J_mean"] - 1e-2
    overall = report["overall"]["merged"]["J_mean"]
    assert overall == pytest.approx(np.mean([s["merged"]["J_mean"] for s in report["sequences"].values()]))
    table = format_table(report)
    assert "alpha" in table and "MEAN" in table


def test_evaluate_davis_rejects_unknown_protocol(fake_davis, tiny_unet):
    with pytest.raises(ValueError):
        evaluate_davis(tiny_unet, fake_davis, (32, 48), protocol="official-ish", progress=False)


# ----------------------------------------------------------------------------------- checkpoints


def _trained_looking_unet():
    torch.manual_seed(1)
    options = {"num_regions": 3, "width": 4, "depth": 2}
    model = build_segmenter("unet", **options).train()
    with torch.no_grad():  # move batch-norm running statistics away from their initial values
        for _ in range(2):
            model(torch.randn(2, 3, 32, 48) * 3 + 1)
    return model.eval(), options


def test_checkpoint_round_trip(tmp_path):
    model, options = _trained_looking_unet()
    spec = ModelSpec("unet", options, input_size=(32, 48), version="v-test")
    save_checkpoint(tmp_path / "run" / "model.pt", model, spec, step=7)
    assert not list((tmp_path / "run").glob("*.partial"))
    loaded, loaded_spec = load_model(tmp_path / "run" / "model.pt")
    assert loaded_spec == spec and not loaded.training
    assert all(torch.equal(value, loaded.state_dict()[name]) for name, value in model.state_dict().items())
    image = torch.randn(2, 3, 32, 48)
    with torch.inference_mode():  # channels-last convolutions sum in another order: equal to float rounding
        for a, b in zip(model.forward_with_features(image), loaded.forward_with_features(image)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert load_checkpoint(tmp_path / "run" / "model.pt")["step"] == 7
    # the float16 shipping copy rebuilds the same network, to float16 precision
    slim_checkpoint(tmp_path / "run" / "model.pt", tmp_path / "slim.pt")
    slim, _ = load_model(tmp_path / "slim.pt")
    with torch.inference_mode():
        torch.testing.assert_close(slim(image), model(image), atol=0.05, rtol=0.01)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pt")


EXECUTED = []


def _record_execution(value):
    EXECUTED.append(value)
    return value


class _Payload:
    def __reduce__(self):
        return (_record_execution, ("ran",))


def test_load_refuses_pickled_objects(tmp_path):
    model, options = _trained_looking_unet()
    path = tmp_path / "evil.pt"
    torch.save({"model": model.state_dict(), "spec": ModelSpec("unet", options).to_dict(), "extra": _Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_model(path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)
    assert EXECUTED == []
    # a plain torch.load would have run it: the test would notice a loader without weights_only
    torch.load(path, weights_only=False)
    assert EXECUTED == ["ran"]


def test_photos_are_scored_in_their_own_aspect_ratio_when_the_model_keeps_it(tmp_path):
    """``gwm eval --images`` feeds each photo as /segment does: a batch of portrait and landscape
    photos scores what each photo scores alone at its own input size, and not what the stretch does."""
    from models.inference import predict
    from models.preprocessing import network_input_size
    from training.evaluate import evaluate_images

    torch.manual_seed(0)
    model = build_segmenter("unet", num_regions=3, width=4, depth=2).eval()
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    shapes = [(60, 40), (40, 60), (60, 40), (50, 50)]
    for i, (height, width) in enumerate(shapes):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
        Image.fromarray((rng.random((height, width)) > 0.5).astype(np.uint8) * 255).save(tmp_path / "masks" / f"{i}.png")

    def alone(keep_aspect: bool) -> float:
        scores = []
        for i, shape in enumerate(shapes):
            rgb = np.asarray(Image.open(tmp_path / "images" / f"{i}.png"))
            truth = np.asarray(Image.open(tmp_path / "masks" / f"{i}.png")) > 127
            _, soft = predict(model, [rgb], network_input_size(shape, (32, 48), keep_aspect), merge="border")
            up = torch.nn.functional.interpolate(soft[None], size=shape, mode="bilinear", align_corners=False)
            scores.append(jaccard(up[0, 0].numpy() > 0.5, truth))
        return float(np.mean(scores))

    report = evaluate_images(model, tmp_path / "images", tmp_path / "masks", (32, 48), merge="border",
                             progress=False, keep_aspect=True)
    assert report["J"] == pytest.approx(alone(True), abs=1e-9)
    assert alone(True) != pytest.approx(alone(False), abs=1e-6)
