"""Test-time adaptation on one video (paper App. C.1), then segmentation of every frame.

A trained network segments a new video from appearance alone. Taking a few gradient steps of the
training loss on that video's own frames and optical flow lets it "observe" the motion first; the
paper reports +9.5 J on DAVIS with 20 steps. This module is the one implementation of that job: the
service's worker, the CLI and the tests all call :func:`adapt_and_segment`.

Settings follow App. C.1 — "we follow our training setup (optimizer, rate, batch size)": AdamW at
the training learning rate, the training batch size (capped by the number of frames), the same loss,
gradient clipping and flips. The warm-up is skipped: over 20 steps it would keep the rate near 1e-6
and the adaptation would do nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.refinement import foreground_mask, refinement_guide
from models.segmenters import Segmenter

from .checkpoint import load_model, merge_strategy
from .data import FlowPairDataset
from .evaluate import predict
from .flow import DEFAULT_FLOW_METHOD, build_flow_estimator
from .flow_cache import PAPER_GAPS
from .train import LossFunction, TrainConfig, make_optimizer, select_device, train_step

__all__ = ["AdaptationCancelled", "AdaptationSettings", "adapt", "adapt_and_segment"]

log = logging.getLogger(__name__)

#: Progress callback: (stage, done, total), stage in {"flow", "adapting", "segmenting"}; flow counts
#: frame pairs over all gaps, adapting counts steps, segmenting counts frames.
Progress = Callable[[str, int, int], None]


class AdaptationCancelled(Exception):
    """Raised between steps when the caller asked to stop."""


@dataclass
class AdaptationSettings:
    """Knobs of test-time adaptation; defaults are the paper's (App. C.1 with App. A's U-Net setup)."""

    steps: int = 20
    batch_size: int = 16
    lr: float = 7e-4
    weight_decay: float = 0.01
    grad_clip: float = 5.0
    loss_multiplier: float = 0.03
    gaps: tuple[int, ...] = PAPER_GAPS
    flow_method: str = DEFAULT_FLOW_METHOD
    seed: int = 0
    #: Keep batch-norm statistics fixed while adapting (the paper's training setup updates them);
    #: one video's frames are a narrow batch, and re-estimating statistics from it can shift every layer.
    freeze_norm: bool = False

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                           weight_decay=self.weight_decay, grad_clip=self.grad_clip,
                           loss_multiplier=self.loss_multiplier, channels_last=False)


def _check_cancel(should_cancel: Callable[[], bool] | None) -> None:
    if should_cancel is not None and should_cancel():
        raise AdaptationCancelled("adaptation cancelled")


def _check_cancel_in_layers(model: torch.nn.Module, should_cancel: Callable[[], bool] | None) -> None:
    """Poll ``should_cancel`` before every layer's forward pass and as every gradient arrives, too.

    Checked between steps alone, a cancel waits for the rest of a step: ~1.4 s for the default model
    at batch 16 on two CPU cores, several seconds when other work shares them, while the service
    promises to stop a job within 2 s. The hooks stay: only for a model that is thrown away after use.
    """
    if should_cancel is None:
        return

    def check(*_: object) -> None:  # a forward pre-hook and a gradient hook alike
        _check_cancel(should_cancel)

    for module in model.modules():
        if next(module.parameters(recurse=False), None) is not None:
            module.register_forward_pre_hook(check)
    for parameter in model.parameters():
        parameter.register_hook(check)


def adapt(
    model: Segmenter,
    dataset: FlowPairDataset,
    settings: AdaptationSettings,
    device: torch.device,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[float]:
    """Take ``settings.steps`` training steps of ``model`` (in place) on ``dataset``; returns losses."""
    config = settings.train_config()
    optimizer = make_optimizer(model, config)
    loss_fn = LossFunction(config, device)
    generator = torch.Generator().manual_seed(settings.seed)
    batch_size = min(settings.batch_size, len(dataset))
    losses = []
    model.train()
    if settings.freeze_norm:
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.SyncBatchNorm)):
                module.eval()
    if progress is not None:  # the stage starts now, not after its first step: stage timings stay true
        progress("adapting", 0, settings.steps)
    for step in range(settings.steps):
        _check_cancel(should_cancel)
        batch = dataset.sample(batch_size, generator)
        loss, _ = train_step(model, optimizer, loss_fn, batch, settings.lr, config)
        losses.append(loss)
        if progress is not None:
            progress("adapting", step + 1, settings.steps)
    model.eval()
    return losses


def adapt_and_segment(
    frames: Sequence[np.ndarray],
    checkpoint_path: str | Path,
    steps: int = 20,
    device: str = "cpu",
    flow_method: str = DEFAULT_FLOW_METHOD,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    batch_size: int = 16,
    merge: str | None = None,
    refine: bool = False,
    flow_options: dict | None = None,
) -> list[np.ndarray]:
    """Adapt a fresh copy of the checkpoint's network to ``frames`` and segment each of them.

    Args:
        frames: RGB uint8 frames (H, W, 3) of one video, in order; at least two.
        checkpoint_path: model checkpoint (``.pt``) to start from; it is never modified.
        steps: adaptation steps (0 segments with the checkpoint as it is).
        device: ``cpu``, ``cuda`` or ``auto``.
        flow_method: estimator name, see :mod:`training.flow`.
        progress: called as (stage, done, total).
        should_cancel: polled between units of work and inside each (per layer); returning True raises
            AdaptationCancelled.
        batch_size: frames per inference batch when segmenting.
        merge: foreground merge strategy; None uses the one recorded in the checkpoint.
        refine: snap each mask to its frame's edges (models/refinement.py).
        flow_options: options of the flow method (RAFT: ``weights``, ``device``, ``scale``, ``iterations``).

    Returns:
        One boolean mask (H, W) per frame at the frame's own resolution.
    """
    if len(frames) < 2:
        raise ValueError("adaptation needs a video of at least two frames")
    torch_device = select_device(device)
    model, spec = load_model(checkpoint_path, torch_device)
    _check_cancel_in_layers(model, should_cancel)
    input_size = tuple(spec["input_size"])
    merge = merge or merge_strategy(spec)
    settings = AdaptationSettings(steps=steps, flow_method=flow_method)
    if steps > 0:
        estimator = build_flow_estimator(flow_method, **(flow_options or {}))

        def on_flow_pair(done: int, total: int) -> None:  # cancellation lands between two frame pairs
            if progress is not None:
                progress("flow", done, total)
            _check_cancel(should_cancel)

        dataset = FlowPairDataset.from_frames(frames, estimator, settings.gaps, input_size, progress=on_flow_pair)
        losses = adapt(model, dataset, settings, torch_device, progress, should_cancel)
        log.info("adapted on %d frames for %d steps: loss %.4f -> %.4f", len(frames), steps, losses[0], losses[-1])
    masks: list[np.ndarray] = []
    if progress is not None:
        progress("segmenting", 0, len(frames))
    for start in range(0, len(frames), batch_size):
        _check_cancel(should_cancel)
        chunk = frames[start:start + batch_size]
        _, soft = predict(model, chunk, input_size, torch_device, merge)
        masks += [foreground_mask(soft[i], frame.shape[:2], guide=refinement_guide(frame) if refine else None)
                  for i, frame in enumerate(chunk)]
        if progress is not None:
            progress("segmenting", len(masks), len(frames))
    return masks
