"""The training loop (paper §3, App. A), shared by ``gwm train`` and test-time adaptation.

Defaults follow the paper's U-Net setting (App. A): AdamW, learning rate 7e-4 reached by a linear
warm-up from 1e-6 over 1.5 k steps, then polynomial decay (power 0.9), weight decay 0.01, batch 16,
gradient clipping at a 2-norm of 5.0, loss multiplier 0.03, K = 4, 128×224 input, quadratic motion
model, gaps {−2, −1, 1, 2}. Where the CPU forces a cheaper choice (narrower U-Net, loss on the input
grid instead of 480×854) it is an option with the paper's value documented next to it.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from models.distillation import subset_distillation_loss
from models.merge_strategy import PAPER_MERGE, MergeStrategy
from models.motion import MotionModel, coordinate_basis, motion_loss
from models.preprocessing import DEFAULT_INPUT_SIZE
from models.segmenters import DEFAULT_BACKBONE, Segmenter, build_segmenter
from models.spec import ModelSpec

from .augment import Augmentation
from .batch import Batch
from .checkpoint import load_checkpoint, save_checkpoint
from .data import FlowPairDataset
from .flow import DEFAULT_FLOW_METHOD
from .flow_cache import FlowCache, default_cache_dir
from .frames import DEFAULT_EVAL_DATA, DEFAULT_EVAL_SPLIT, DEFAULT_RESOLUTION, DEFAULT_TRAIN_DATA, list_sources
from .pseudo_labels import RECORD_NAME as PSEUDO_LABEL_RECORD
from .pseudo_labels import load_pseudo_labels

__all__ = ["AUTO_MERGE", "LossFunction", "TrainConfig", "learning_rate", "make_optimizer", "select_device", "train", "train_step"]

log = logging.getLogger(__name__)

#: ``TrainConfig.merge`` that lets the architecture decide (see :meth:`TrainConfig.recorded_merge`).
AUTO_MERGE = "auto"


@dataclass
class TrainConfig:
    """Everything that defines a training run. Paper values in comments where they differ."""

    # Frame roots, each ROOT or ROOT:SPLIT[,SPLIT] (training/frames.py). The default leaves DAVIS-2016 val
    # out so that val-dev measures zero-shot generalisation (paper Table 4); adding val-dev here is the
    # paper's internal-learning setting (§3.3).
    data: list[str] = field(default_factory=lambda: list(DEFAULT_TRAIN_DATA))
    eval_data: str = DEFAULT_EVAL_DATA  # annotated root of the val-dev split (learning curve, gwm eval)
    resolution: str = DEFAULT_RESOLUTION
    flow_cache: str = default_cache_dir(DEFAULT_FLOW_METHOD, DEFAULT_INPUT_SIZE)  # paper: RAFT flow
    output_dir: str = "runs/default"
    architecture: str = "unet"
    width: int = 24  # paper: 64 (standard U-Net); narrower for CPU training (unet only)
    backbone: str = DEFAULT_BACKBONE  # timm model name (backbone only); paper: DINO ViT-B/8
    # Local file with pretrained weights of that timm model (backbone only; None = random weights).
    # Read only when a run starts from scratch: a resumed or --init-from run has its own weights.
    backbone_weights: str | None = None
    num_regions: int = 4
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE
    loss_size: tuple[int, int] | None = None  # None = flow cache grid; paper: 480×854
    motion_model: str = MotionModel.QUADRATIC.value
    weight_power: int = 1  # 1 = paper (p), 2 = authors' code (p²)
    steps: int = 15_000
    decay_horizon: int | None = None  # poly decay reaches 0 here; None = steps
    batch_size: int = 16
    lr: float = 7e-4
    warmup_start_lr: float = 1e-6
    warmup_steps: int = 1_500
    poly_power: float = 0.9
    weight_decay: float = 0.01
    grad_clip: float = 5.0
    loss_multiplier: float = 0.03
    flow_clip: float | None = 20.0
    # Zero weight for flow vectors failing the forward–backward check (models/video_flow.py); the paper
    # trusts every vector. Needs opposite gaps in the cache (the paper's gaps have them).
    flow_trust_check: bool = False
    flip: bool = True
    # Exponential moving average of the weights (batch-norm statistics included), kept beside the trained
    # ones and written as ema.pt: 0 = off (the paper keeps none). An average over the last ~1/(1 − decay)
    # steps is a cheap ensemble along the run, like the WiSE-FT midpoint, which model 0.4.0 gained from.
    ema_decay: float = 0.0
    # Augmentation (training/augment.py; the paper has none): colour jitter strength, greyscale and blur
    # probabilities, largest zoom of random crops (1.0 = no crops), chance of receiving another sample's
    # moving region (copy-paste).
    colour_jitter: float = 0.0
    grey_probability: float = 0.0
    blur_probability: float = 0.0
    max_zoom: float = 1.0
    copy_paste: float = 0.0
    paste_relative_flow: bool = False  # pasted flow relative to the donor's background (Augmentation)
    # Self-training (training/pseudo_labels.py; the paper has none): a folder of teacher masks from
    # `gwm pseudo-label`, taught beside the flow loss with this weight (models/distillation.py).
    pseudo_labels: str | None = None
    pseudo_label_weight: float = 1.0
    pseudo_label_regions: str = "best"  # taught to the best-matching regions, or to them and the merge's choice
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # None = all cores
    channels_last: bool = True
    log_every: int = 25
    checkpoint_every: int = 250
    snapshot_every: int = 0  # 0 = never; otherwise keep step_<N>.pt copies for a learning curve
    coarse_steps: int = 0  # first N steps at coarse_scale × input size (a cheap resolution schedule)
    coarse_scale: float = 0.5
    eval_every: int = 0  # 0 = never; otherwise J on val-dev every N steps
    init_from: str | None = None  # start a new run from these model weights (e.g. the shipped .pt)
    merge: str = AUTO_MERGE  # a MergeStrategy name, or auto: spectral (paper) for backbones, border for the U-Net
    version: str = "dev"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        if "data_root" in data:  # runs before several roots existed: one root and its splits
            root, splits = data.pop("data_root"), data.pop("splits", None)
            data["data"] = [f"{root}:{','.join(splits)}" if splits else root]
            data.setdefault("eval_data", root)
        for key in ("input_size", "loss_size"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)

    def recorded_merge(self) -> MergeStrategy:
        """The merge recorded in the model (``ModelSpec.merge``). ``auto`` keeps the paper's spectral
        merge for pretrained backbones and uses the border merge for the U-Net, whose own features
        measured poor for Eq. 6 (see models/merging.py)."""
        if self.merge == AUTO_MERGE:
            return MergeStrategy.BORDER if self.architecture == "unet" else PAPER_MERGE
        return MergeStrategy(self.merge)

    def augmentation(self) -> Augmentation:
        return Augmentation(colour_jitter=self.colour_jitter, grey_probability=self.grey_probability,
                            blur_probability=self.blur_probability, max_zoom=self.max_zoom,
                            copy_paste=self.copy_paste, paste_relative_flow=self.paste_relative_flow)

    def segmenter_options(self) -> dict[str, Any]:
        """The architecture's constructor options, as the model records them (``ModelSpec.options``):
        what rebuilds the network. The pretrained weights file is not among them, since the
        checkpoint holds the weights; see :meth:`initial_segmenter_options`."""
        options: dict[str, Any] = {"num_regions": self.num_regions}
        if self.architecture == "unet":
            options["width"] = self.width
        elif self.architecture == "backbone":
            options["backbone"] = self.backbone
            options["image_size"] = list(self.input_size)  # a list: the spec is stored as JSON too
        return options

    def initial_segmenter_options(self) -> dict[str, Any]:
        """The constructor options of a network trained from scratch: the recorded ones plus the
        pretrained backbone weights, if any."""
        options = self.segmenter_options()
        if self.backbone_weights is not None:
            if self.architecture != "backbone":
                raise ValueError("backbone weights go with the backbone architecture, not "
                                 f"{self.architecture!r}")
            options["weights"] = self.backbone_weights
        return options


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available and falls back to the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        log.warning("CUDA requested but not available; using the CPU")
        return torch.device("cpu")
    return torch.device(name)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up from ``warmup_start_lr`` to ``lr``, then polynomial decay to 0 at the horizon."""
    if step < config.warmup_steps:
        return config.warmup_start_lr + (config.lr - config.warmup_start_lr) * step / config.warmup_steps
    horizon = config.decay_horizon or config.steps
    remaining = max(0.0, 1.0 - (step - config.warmup_steps) / max(1, horizon - config.warmup_steps))
    return config.lr * remaining**config.poly_power


def make_optimizer(model: Segmenter, config: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=config.warmup_start_lr, weight_decay=config.weight_decay)


class LossFunction:
    """The GWM loss with its basis cached for the loss grid, plus, where a batch has teacher masks,
    ``pseudo_label_weight`` × the subset distillation loss (models/distillation.py)."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self._basis: dict[tuple[int, int], torch.Tensor] = {}

    def __call__(self, logits: torch.Tensor, flows: torch.Tensor,
                 confidence: torch.Tensor | None = None, teacher: torch.Tensor | None = None) -> torch.Tensor:
        size = tuple(flows.shape[-2:])
        if size not in self._basis:
            self._basis[size] = coordinate_basis(*size, self.config.motion_model, device=self.device)
        if tuple(logits.shape[-2:]) != size:
            logits = torch.nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        probabilities = logits.float().softmax(dim=1)
        loss = motion_loss(probabilities, flows, self.config.motion_model,
                           weight_power=self.config.weight_power, basis=self._basis[size], confidence=confidence)
        loss = loss * self.config.loss_multiplier
        if teacher is not None:
            loss = loss + self.config.pseudo_label_weight * subset_distillation_loss(
                probabilities, teacher, self.config.pseudo_label_regions, self.config.recorded_merge())
        return loss


def train_step(
    model: Segmenter,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFunction,
    batch: Batch,
    lr: float,
    config: TrainConfig,
) -> tuple[float, float]:
    """One optimisation step; returns (loss, gradient norm before clipping)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    device = loss_fn.device
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    images = batch.images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
    flows = batch.flows.to(device, non_blocking=True)
    confidence = None if batch.confidence is None else batch.confidence.to(device, non_blocking=True)
    teacher = None if batch.teacher is None else batch.teacher.to(device, non_blocking=True)
    loss = loss_fn(model(images), flows, confidence, teacher)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return loss.item(), norm.item()


def _build_model(config: TrainConfig, device: torch.device, from_scratch: bool) -> Segmenter:
    """The network of a run; ``from_scratch`` loads the pretrained backbone weights, if any (a run
    that resumes or starts from other weights overwrites them at once, so it skips the file)."""
    options = config.initial_segmenter_options() if from_scratch else config.segmenter_options()
    model = build_segmenter(config.architecture, **options).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _weight_average(model: Segmenter, decay: float) -> AveragedModel | None:
    """The EMA of ``model``'s weights and buffers (``TrainConfig.ema_decay``); None when off. Its first
    update copies the weights, every later one moves the average ``1 − decay`` of the way to them."""
    if decay <= 0.0:
        return None
    if not decay < 1.0:
        raise ValueError(f"ema_decay must be below 1, got {decay}")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def train(config: TrainConfig, resume: bool = True, progress: bool = True) -> Path:
    """Train (or resume) a run in ``config.output_dir``; returns the final checkpoint path.

    ``<output_dir>/last.pt`` is rewritten every ``checkpoint_every`` steps and resumed from when
    present; ``<output_dir>/log.jsonl`` gets one JSON line per logged step (and per evaluation).
    With ``ema_decay``, ``<output_dir>/ema.pt`` holds the weights' moving average, written with
    ``last.pt`` (snapshots ``ema_step_<N>.pt``), and evaluations score it too.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    device = select_device(config.device)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "last.pt"
    torch.manual_seed(config.seed)
    resuming = resume and last.is_file()
    model = _build_model(config, device, from_scratch=not (resuming or config.init_from))
    optimizer = make_optimizer(model, config)
    generator = torch.Generator().manual_seed(config.seed)
    step = 0
    if resuming:
        state = load_checkpoint(last)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step = int(state["step"])
        log.info("resumed %s at step %d", last, step)
    elif config.init_from:
        model.load_state_dict({k: v.float() for k, v in load_checkpoint(config.init_from)["model"].items()})
        log.info("initialised from %s", config.init_from)
    ema = _weight_average(model, config.ema_decay)
    if ema is not None and resuming:
        if "ema" not in state:
            raise ValueError(f"{last} was written without a weight average; resume with ema_decay=0")
        ema.load_state_dict(state["ema"])
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2))
    cache = FlowCache(config.flow_cache)
    # the flow trained on, beside the config: the run directory alone can card its weights (gwm card)
    (out / "flow.json").write_text(cache.spec.to_json())

    videos = list_sources(config.data, config.resolution)
    teacher = None
    if config.pseudo_labels:
        teacher = load_pseudo_labels(videos, config.pseudo_labels, (cache.spec.height, cache.spec.width))
        # what made the labels (teacher weights, adaptation settings), beside the config for gwm card
        shutil.copyfile(Path(config.pseudo_labels) / PSEUDO_LABEL_RECORD, out / PSEUDO_LABEL_RECORD)
    dataset = FlowPairDataset.from_cache(videos, cache, config.input_size, progress=progress,
                                         loss_size=config.loss_size, flip=config.flip, flow_clip=config.flow_clip,
                                         augmentation=config.augmentation(), trust_check=config.flow_trust_check,
                                         teacher=teacher)
    log.info("training on %d frames from %d sequences, device %s, %d threads",
             len(dataset), len(videos), device, torch.get_num_threads())
    loss_fn = LossFunction(config, device)
    spec = ModelSpec(config.architecture, config.segmenter_options(), config.input_size, version=config.version,
                     merge=config.recorded_merge(), keep_aspect=model.any_input_size)
    evaluate_fn = _periodic_evaluator(config) if config.eval_every else None

    def checkpoint() -> None:
        averaged = {} if ema is None else {"ema": ema.state_dict()}
        save_checkpoint(last, model, spec, optimizer=optimizer.state_dict(), step=step,
                        generator=generator.get_state(), config=asdict(config), **averaged)
        if ema is not None:
            save_checkpoint(out / "ema.pt", ema.module, spec, step=step)

    model.train()
    window_loss, window_start, window_steps = 0.0, time.perf_counter(), 0
    with (out / "log.jsonl").open("a") as log_file, tqdm(
        total=config.steps, initial=step, unit="step", disable=not progress, desc="training"
    ) as bar:
        while step < config.steps:
            batch = dataset.sample(config.batch_size, generator)
            if step < config.coarse_steps:
                batch = batch.rescaled(config.coarse_scale)
            lr = learning_rate(step, config)
            loss, norm = train_step(model, optimizer, loss_fn, batch, lr, config)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at step {step}")
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            window_loss += loss
            window_steps += 1
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                elapsed = time.perf_counter() - window_start
                record = {"step": step, "loss": window_loss / window_steps, "lr": lr, "grad_norm": norm,
                          "steps_per_s": window_steps / elapsed,
                          "images_per_s": window_steps * config.batch_size / elapsed}
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}")
                window_loss, window_start, window_steps = 0.0, time.perf_counter(), 0
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpoint()
            if config.snapshot_every and step % config.snapshot_every == 0:
                save_checkpoint(out / f"step_{step:06d}.pt", model, spec, step=step)
                if ema is not None:
                    save_checkpoint(out / f"ema_step_{step:06d}.pt", ema.module, spec, step=step)
            if evaluate_fn is not None and (step % config.eval_every == 0 or step == config.steps):
                model.eval()
                record = {"step": step, **evaluate_fn(model, device)}
                if ema is not None:
                    record.update({f"{name}_ema": value for name, value in evaluate_fn(ema.module, device).items()})
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                log.info("step %d: %s", step, record)
                model.train()
    return last


def _periodic_evaluator(config: TrainConfig):
    """J on the val-dev sequences for the learning curve (imported lazily: evaluation is optional)."""
    from .evaluate import evaluate_davis

    def run(model: Segmenter, device: torch.device) -> dict[str, float]:
        report = evaluate_davis(model, config.eval_data, config.input_size, split=DEFAULT_EVAL_SPLIT,
                                resolution=config.resolution, device=device, progress=False,
                                merge=config.recorded_merge())
        return {"J_merged": report["overall"]["merged"]["J_mean"], "J_oracle": report["overall"]["oracle"]["J_mean"]}

    return run
