"""Self-training (training/pseudo_labels.py): teacher masks from adapted networks, stored, loaded,
carried through the training batches and taught by the training loop."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from test_training_evaluate import write_fake_davis

from models.distillation import subset_distillation_loss
from models.segmenters import build_segmenter
from models.spec import ModelSpec
from models.video_flow import VideoFlow
from training.adapt import AdaptationSettings
from training.checkpoint import load_checkpoint, save_checkpoint
from training.data import FlowPairDataset
from training.flow import DISFlow
from training.flow_cache import FlowCache, FlowCacheSpec
from training.frames import list_sequences
from training.model_card import training_summary
from training.pseudo_labels import RECORD_NAME, load_pseudo_labels, write_pseudo_labels
from training.train import LossFunction, TrainConfig, train

SETTINGS = AdaptationSettings(steps=2, flow_method="dis-ultrafast")


@pytest.fixture
def fake_davis(tmp_path):
    davis = write_fake_davis(tmp_path / "davis", sequences=("alpha", "beta"), frames=4, size=(40, 60))
    options = {"num_regions": 3, "width": 4, "depth": 2}
    save_checkpoint(tmp_path / "teacher.pt", build_segmenter("unet", **options),
                    ModelSpec("unet", options, input_size=(32, 48)))
    return davis, tmp_path / "teacher.pt"


def _copy_annotations(davis, videos, output) -> None:
    """The fake videos' true masks as pseudo-labels (what a perfect teacher would write)."""
    for video in videos:
        (output / video.name).mkdir(parents=True)
        for frame in video.frames:
            truth = davis / "Annotations" / "480p" / video.name / f"{frame.stem}.png"
            Image.open(truth).save(output / video.name / f"{frame.stem}.png")


def test_a_mask_per_frame_at_its_size_a_record_and_a_resume(fake_davis, tmp_path, monkeypatch, single_thread):
    davis, teacher = fake_davis
    videos = list_sequences(davis, "240p", ["train"])
    out = write_pseudo_labels(videos, teacher, tmp_path / "labels", SETTINGS, refine=False, temporal=False,
                              progress=False)
    for video in videos:
        written = sorted((out / video.name).glob("*.png"))
        assert [p.stem for p in written] == [f.stem for f in video.frames]
        for path in written:
            mask = np.asarray(Image.open(path))
            assert mask.shape == (40, 60) and set(np.unique(mask)) <= {0, 255}
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["settings"]["steps"] == 2 and len(record["checkpoint_sha256"]) == 64

    def must_not_run(*args, **kwargs):
        raise AssertionError("a complete sequence was labelled again")

    monkeypatch.setattr("training.adapt.adapt_and_segment", must_not_run)
    write_pseudo_labels(videos, teacher, out, SETTINGS, refine=False, temporal=False, progress=False)
    (out / "beta" / "00002.png").unlink()  # an interrupted sequence is labelled again, alone
    calls = []
    monkeypatch.setattr("training.adapt.adapt_and_segment",
                        lambda frames, *args, **kwargs: calls.append(len(frames)) or _FakeSegmentation(frames))
    write_pseudo_labels(videos, teacher, out, SETTINGS, refine=False, temporal=False, progress=False)
    assert calls == [4] and (out / "beta" / "00002.png").is_file()
    with pytest.raises(ValueError, match="made otherwise"):
        write_pseudo_labels(videos, teacher, out, AdaptationSettings(steps=3), refine=False, temporal=False,
                            progress=False)


class _FakeSegmentation:
    def __init__(self, frames):
        self.masks = iter([np.zeros(frame.shape[:2], bool) for frame in frames])
        self.adaptation = None


def test_loaded_labels_are_area_averaged_onto_the_flow_grid(fake_davis, tmp_path):
    davis, _ = fake_davis
    videos = list_sequences(davis, "240p", ["train"])
    _copy_annotations(davis, videos, tmp_path / "labels")
    loaded = load_pseudo_labels(videos, tmp_path / "labels", (16, 24))
    assert loaded.shape == (8, 1, 16, 24) and loaded.dtype == torch.float16
    truth = np.asarray(Image.open(davis / "Annotations" / "480p" / "beta" / "00003.png"), np.float32) / 255
    expected = cv2.resize(truth, (24, 16), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(loaded[7, 0].float().numpy(), expected, atol=1e-3)
    assert 0 < loaded[7].float().mean() < 0.5 and ((loaded > 0) & (loaded < 1)).any()  # soft at the edges
    (tmp_path / "labels" / "alpha" / "00001.png").unlink()
    with pytest.raises(FileNotFoundError, match="alpha"):
        load_pseudo_labels(videos, tmp_path / "labels", (16, 24))


def test_teacher_masks_follow_their_frames_through_flips():
    """Left half of every frame bright, the teacher's mask on it: after the dataset's random flips
    the mask is still on the bright half."""
    n, size = 6, (8, 12)
    images = -torch.ones(n, 3, *size)
    images[..., : size[1] // 2] = 1.0
    teacher = torch.zeros(n, 1, *size, dtype=torch.float16)
    teacher[..., : size[1] // 2] = 1.0
    flow = VideoFlow(torch.zeros(n, 1, *size, 2, dtype=torch.float16), torch.ones(n, 1, dtype=torch.bool), (1,))
    dataset = FlowPairDataset(images, flow, teacher=teacher)
    batch = dataset.sample(32, torch.Generator().manual_seed(0))
    flipped = batch.images[:, 0, 0, 0] < 0
    assert 0 < flipped.sum() < 32  # both kinds drawn
    assert torch.equal(batch.teacher[:, 0] > 0.5, batch.images[:, 0] > 0)
    assert dataset.subset(torch.tensor([1, 2])).teacher.shape == (2, 1, *size)
    with pytest.raises(ValueError, match="teacher masks"):
        FlowPairDataset(images, flow, teacher=teacher[:, :, :4])


def test_the_loss_adds_the_weighted_distillation_term():
    config = TrainConfig(pseudo_label_weight=0.7)
    loss_fn = LossFunction(config, torch.device("cpu"))
    logits, flows = torch.randn(2, 4, 16, 24), torch.randn(2, 2, 16, 24)
    teacher = torch.zeros(2, 1, 16, 24)
    teacher[..., 4:10, 6:14] = 1.0
    added = loss_fn(logits, flows, teacher=teacher) - loss_fn(logits, flows)
    assert added.item() == pytest.approx(0.7 * subset_distillation_loss(logits.softmax(dim=1), teacher).item(), rel=1e-5)
    assert added.item() > 0


def test_gwm_pseudo_label_then_train_on_the_labels(fake_davis, tmp_path, single_thread):
    from gwm_cli.main import main

    davis, teacher = fake_davis
    labels = tmp_path / "labels"
    assert main(["pseudo-label", str(teacher), "--data", f"{davis}:train", "--steps", "1", "--no-refine",
                 "--no-temporal", "--output", str(labels)]) == 0
    assert len(list(labels.glob("*/*.png"))) == 8
    cache = tmp_path / "cache"
    FlowCache(cache, FlowCacheSpec("dis-ultrafast", 16, 24, gaps=(-1, 1))).build(
        list_sequences(davis, "240p", ["train"]), DISFlow("ultrafast"), progress=False)
    config = TrainConfig(data=[f"{davis}:train"], eval_data=str(davis), flow_cache=str(cache),
                         output_dir=str(tmp_path / "run"), width=4, num_regions=3, input_size=(32, 48), steps=2,
                         batch_size=3, warmup_steps=1, threads=1, device="cpu", pseudo_labels=str(labels))
    state = load_checkpoint(train(config, progress=False))
    assert state["step"] == 2 and state["config"]["pseudo_labels"] == str(labels)
    card_training = training_summary(tmp_path / "run")  # the card says which teacher made the labels
    assert card_training["pseudo_labels"] == json.loads((labels / RECORD_NAME).read_text())
    (labels / "beta" / "00000.png").unlink()
    with pytest.raises(FileNotFoundError):
        train(TrainConfig(**{**config.__dict__, "output_dir": str(tmp_path / "run2")}), progress=False)
