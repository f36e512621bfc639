"""Test-time adaptation on one video (paper App. C.1), then segmentation of every frame.

A trained network segments a new video from appearance alone. Taking a few gradient steps of the
training loss on that video's own frames and optical flow lets it "observe" the motion first; the
paper reports +9.5 J on DAVIS with 20 steps. This module is the one implementation of that job: the
service's worker, the CLI and the tests all call :func:`adapt_and_segment`.

Settings follow App. C.1 — "we follow our training setup (optimizer, rate, batch size)": AdamW at
the training learning rate, the same loss, gradient clipping and flips, read from
:class:`~training.train.TrainConfig` so that they cannot drift apart. The warm-up is skipped: over 20
steps it would keep the rate near 1e-6 and the adaptation would do nothing.

**The safeguard** (not in the paper). On average adaptation helps, but on some videos it makes the
masks worse — the flow of a compressed upload is noisy, and a few steps on it can undo what the
network knew. Nothing labels an uploaded video, so the judge is the loss itself on frames the
adaptation never trained on: every ``holdout_every``-th frame is held out, its flow loss (the
network in inference mode at the adaptation's resolution, every gap, no augmentation) is measured
before adapting and every ``check_every`` steps. The weights with the lowest held-out loss are kept
only if that loss is at least ``keep_margin`` below the starting one; otherwise the original
weights segment the video and the report says ``reverted``. A video whose flow is noise cannot be
explained better by any mask, so it is reverted; one whose motion the network learns to explain
is kept.

**Half the step** (not in the paper either): the weights that segment the video are the midpoint of
the original and the adapted ones, θ₀ + α(θ − θ₀) with α = ``interpolation`` = 0.5 — weight-space
ensembling (WiSE-FT, Wortsman et al. 2022), the same recipe that made model 0.4.0. Twenty steps on one
video's flow are a noisy estimate: the same video adapted with three seeds ends up to 15 J apart, and
adapted on DIS flow of compressed uploads the full step lowered mean J (bench/bench_adapt.py). The
midpoint keeps the direction and halves the noise: on the 12 val-dev uploads, two seeds each, mean J
gain −3.8 for the full step, +3.4 for the midpoint (README, Benchmarks). The safeguard judges the
weights that are used, the midpoint.

**Several runs** (not in the paper): with ``runs`` > 1 the steps run that many times, each from the
original weights with its own seed (``seed``, ``seed + 1``, …), and the weights each run's checks kept
are averaged — a model soup (Wortsman et al., ICML 2022) — before the interpolation; the safeguard
judges that average. One run's draw of frames and flips moves a video's J by ~2 points (standard
deviation over seeds); the average of two draws moves less, for twice the steps' time (README,
Benchmarks).

**Averaging the checked steps** (not in the paper; off by default): with ``average_checked`` the weights
that segment the video are the mean of the checked steps' weights whose held-out loss beat the start
(Polyak averaging along the run), instead of the single best step's. Measured on the 12 val-dev uploads
at 427×240, three seeds each (bench/bench_adapt.py, variant fast-b16-avg): the mean lies nearer the
original weights — gain +6.3 J against +7.4, the worst single run +0.4 against −2.7 — and taken 0.75 of
the way from them it gains +7.0 with the worst run −2.0 and a wider spread over seeds (2.4 J against
1.3): a smaller step, not a steadier one, so the best step stays the default.

**The appearance check** (not in the paper): a video's flow moves more than its object — a wake, a
shadow, smoke — and adaptation learns to include them while the held-out flow loss improves, which
the safeguard cannot see. With ``appearance_check`` the adapted network's foreground may not grow
into pixels whose colours the original network's masks give to the background
(models/appearance.py): on the 12 val-dev uploads, the same adapted weights, two seeds, mean J gain
+4.4 without it and +6.4 with it, the worst video −14.5 against −3.8 (README, Benchmarks).

**The component check** (not in the paper): adaptation also switches on patches of the scene away
from the object — a stretch of road, a bush — in the object's colours, which the appearance check lets
through. With ``component_check`` the adapted foreground's components that share no pixel with the
original network's foreground are held back (models/connectivity.py): on the 12 val-dev uploads, the
same adapted weights, two seeds, mean J gain +7.1 → +7.7 at 854×480 and +6.1 → +6.7 at 427×240, the
worst video −2.4 → −1.5 and −2.7 → −1.8; no video loses more than 0.1.

**The motion check** (not in the paper): what adaptation adds to the object can still be scenery that
merely moves unlike the far background — parked scooters beside a panning camera — touching the
object and in its colours. With ``motion_check`` each component of the adapted foreground's growth
whose flow the original background's motion model explains as well as the foreground's, and as well
as the background itself, is held back (models/motion_check.py; figures in the README, Benchmarks).

**The steadiness check** (not in the paper): what adaptation learns can also be no object at all — a
swan's wake, new in every frame, attached to the swan and moving unlike the water, which the loss and
the three checks above all let through — and then the masks jump from frame to frame. With
``steadiness_check`` the checked masks are used only if they flicker along the video's flow at most
twice as much as the original network's (models/steadiness.py); otherwise the original network's masks
segment the video and the report says ``reverted`` by ``steadiness``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.inference import segment_frames
from models.segmenters import Segmenter
from models.steadiness import Steadiness

from .batch import Batch, rescale_grid, rescale_images
from .checkpoint import average_weights, interpolate_weights, load_model
from .data import FlowPairDataset, to_reference_units
from .flow import DEFAULT_FLOW_METHOD, build_flow_estimator, video_flow_size
from .flow_cache import PAPER_GAPS
from .train import LossFunction, TrainConfig, make_optimizer, select_device, train_step

__all__ = [
    "AdaptationCancelled",
    "AdaptationReport",
    "AdaptationRun",
    "AdaptationSettings",
    "ProgressCallback",
    "VideoSegmentation",
    "adapt",
    "adapt_and_segment",
    "heldout_frames",
    "mask_checks",
    "run_adaptation_steps",
    "settle",
]

log = logging.getLogger(__name__)

#: Progress callback: (stage, done, total), stage in {"flow", "adapting", "segmenting"}; flow counts
#: frame pairs over all gaps, adapting counts steps, segmenting counts frames.
ProgressCallback = Callable[[str, int, int], None]


class AdaptationCancelled(Exception):
    """Raised between units of work when the caller asked to stop."""


@dataclass(frozen=True)
class AdaptationSettings:
    """Knobs of test-time adaptation. Optimiser, rate, loss and clipping are the training run's
    (:class:`TrainConfig`, App. C.1); the rest are the video job's own."""

    steps: int = 20
    #: Frames per step (capped by the number of frames): the paper's training batch, 16 (App. C.1). Half
    #: of it measured the same mean J on one seed, but over four seeds per upload (bench/bench_adapt.py)
    #: 16 frames gained +6.3 J against +4.8 and steadied the runs: the worst single run −3.1 J against
    #: −26 (a seed's spread 1.8 J against 3.0), for 1.7× the adaptation's time.
    batch_size: int = 16
    lr: float | None = None  # None: the training rate
    #: Input and loss resolution of the adaptation steps and of the safeguard's held-out check,
    #: relative to the network's input size (paper: 1); the segmentation always runs at full size.
    scale: float = 0.5
    gaps: tuple[int, ...] = PAPER_GAPS
    flow_method: str = DEFAULT_FLOW_METHOD
    flow_options: dict[str, Any] = field(default_factory=dict)  # e.g. RAFT weights file, device
    #: Frames with more pixels are area-downscaled to this (h, w) before flow estimation; None: the
    #: flow method's own (:func:`~training.flow.video_flow_size`, see :meth:`flow_frame_size`).
    flow_size: tuple[int, int] | None = None
    #: Zero weight for flow failing the forward–backward check (models/video_flow.py).
    trust_check: bool = False
    #: Keep batch-norm statistics fixed while adapting (the paper's training setup updates them).
    freeze_norm: bool = False
    #: Adapt the encoder's weights too (the paper adapts the whole network); False adapts the decoder
    #: and head only (Segmenter.encoder_parameters), so the features the network learnt stay put.
    adapt_encoder: bool = True
    #: The safeguard: every n-th frame is held out (0 disables the safeguard: always keep).
    holdout_every: int = 5
    check_every: int = 5
    keep_margin: float = 0.02  # relative drop of the held-out loss needed to keep the adapted weights
    #: Fraction of the adaptation's change of the weights kept: θ₀ + α(θ − θ₀) (see the module
    #: docstring); 1 is the paper (the adapted weights as they are).
    interpolation: float = 0.5
    #: Hold the adapted foreground where it would grow into background colours (models/appearance.py).
    appearance_check: bool = True
    #: Hold the adapted foreground's components that do not touch the original network's foreground
    #: (models/connectivity.py).
    component_check: bool = True
    #: Hold what the adapted foreground grew where it moves like the original's background
    #: (models/motion_check.py).
    motion_check: bool = True
    #: Segment with the original network's masks if the adapted ones flicker along the flow more than
    #: it allows (models/steadiness.py).
    steadiness_check: bool = True
    #: Independent runs of the steps, with seeds ``seed``, ``seed + 1``, …, whose kept weights are averaged
    #: before the interpolation (see the module docstring); each run costs the steps' time again.
    runs: int = 1
    seed: int = 0
    #: Segment with the average of the checked steps' weights whose held-out loss beat the start (every
    #: checked step's without a safeguard) instead of the single best one (see the module docstring: off,
    #: a smaller step rather than a steadier one).
    average_checked: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.interpolation <= 1.0:
            raise ValueError(f"interpolation must be in (0, 1], got {self.interpolation}")
        if self.runs < 1:
            raise ValueError(f"runs must be at least 1, got {self.runs}")

    def flow_frame_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """The (height, width) flow runs at for a network of ``input_size``: ``flow_size`` if set."""
        return self.flow_size or video_flow_size(self.flow_method, input_size)

    def train_config(self) -> TrainConfig:
        """The training setup the steps follow, with this job's steps, batch and rate."""
        base = TrainConfig()
        return dataclasses.replace(base, steps=self.steps, batch_size=self.batch_size, lr=self.lr or base.lr,
                                   flow_trust_check=self.trust_check, seed=self.seed)


@dataclass(frozen=True)
class AdaptationReport:
    """What adaptation did, for the job result: ``kept`` or ``reverted``, and the evidence."""

    decision: str  # "kept": adapted weights segment the video; "reverted": the original ones do
    #: what reverted it: "heldout_loss" (the safeguard, before segmenting) or "steadiness" (the masks
    #: flickered, models/steadiness.py); None when kept
    reverted_by: str | None
    steps: int  # steps taken per run
    runs: int  # independent runs whose kept weights were averaged
    seed: int  # the first run's seed (run i drew with seed + i): the same seed, the same draw
    best_step: int  # step whose weights were kept (0 when reverted; with several runs, the latest of theirs)
    heldout_frames: int  # 0: the video was too short to hold frames out, and the steps were kept unjudged
    heldout_loss_before: float | None
    heldout_loss_after: float | None  # held-out loss of the weights judged: the best step's, interpolated
    interpolation: float  # fraction of the best step's change of the weights used (see AdaptationSettings)
    appearance_check: bool  # the masks were held where they grew into background colours
    component_check: bool  # the masks were held on components the original's foreground does not touch
    motion_check: bool  # the masks were held where their growth moves like the original's background
    #: flicker (1 − mean temporal IoU on the network's grid) of the original and the checked adapted masks,
    #: when the steadiness check measured it (kept adaptations of videos with a next frame's flow)
    flicker_before: float | None
    flicker_after: float | None
    train_losses: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "train_losses": [round(x, 6) for x in self.train_losses]}

    def with_steadiness(self, steadiness: Steadiness | None) -> AdaptationReport:
        """This report after the steadiness check measured ``steadiness`` (None: it did not run); an
        unsteady adaptation is reported reverted, its mask checks not applied."""
        if steadiness is None:
            return self
        flickers = {"flicker_before": steadiness.original_flicker, "flicker_after": steadiness.adapted_flicker}
        if steadiness.steady:
            return dataclasses.replace(self, **flickers)
        return dataclasses.replace(self, **flickers, decision="reverted", reverted_by="steadiness", best_step=0,
                                   appearance_check=False, component_check=False, motion_check=False)


@dataclass
class VideoSegmentation:
    """One mask per frame, and what adaptation did (None when no step was asked for).

    ``masks`` yields the full-size masks one at a time, in frame order, and only once: the networks
    have run, and each mask is made as it is asked for (models.inference.segment_frames)."""

    masks: Iterator[np.ndarray]
    adaptation: AdaptationReport | None


def _check_cancel(should_cancel: Callable[[], bool] | None) -> None:
    if should_cancel is not None and should_cancel():
        raise AdaptationCancelled("adaptation cancelled")


def heldout_frames(n: int, every: int) -> torch.Tensor:
    """Indices of the held-out frames: every ``every``-th, starting mid-period so the first and last
    frames (with fewer neighbours) stay in training; none when the video is too short to spare them."""
    if every <= 1 or n < 2 * every:
        return torch.empty(0, dtype=torch.long)
    return torch.arange(every // 2, n, every)


@torch.no_grad()
def heldout_loss(model: Segmenter, dataset: FlowPairDataset, frames: torch.Tensor, loss_fn: LossFunction,
                 scale: float = 1.0, chunk: int = 16) -> float:
    """Mean flow loss of ``frames`` over every gap they have, the network in inference mode and
    without flips or augmentation, at ``scale`` × the input size (the adaptation's own: a check at
    full size would cost as much as the steps): the deterministic measure the safeguard compares."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(frames), chunk):
        index = frames[start:start + chunk]
        images = dataset.images[index].to(loss_fn.device)
        logits = model(rescale_images(images, scale) if scale != 1.0 else images)
        for column in range(len(dataset.flow.gaps)):
            has_gap = dataset.flow.valid[index, column]
            if not has_gap.any():
                continue
            _, flows = dataset.flow.pair(column, index[has_gap])
            targets = [to_reference_units(flows, dataset.flow_clip)]
            if dataset.confidence is not None:
                targets.append(dataset.confidence[index[has_gap], column][:, None].float())
            if scale != 1.0:
                targets = [rescale_grid(target, scale) for target in targets]
            targets = [target.to(loss_fn.device) for target in targets]
            loss = loss_fn(logits[has_gap], *targets)
            total += loss.item() * int(has_gap.sum())
            count += int(has_gap.sum())
    model.train(was_training)
    return total / max(count, 1)


def _set_norm_frozen(model: Segmenter) -> None:
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.SyncBatchNorm)):
            module.eval()


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


@contextlib.contextmanager
def _encoder_held(model: Segmenter, hold: bool) -> Iterator[None]:
    """With ``hold``, the encoder's weights get no gradient inside the block, so AdamW leaves them
    (weight decay included) as they are; afterwards they are trainable again."""
    held = [parameter for parameter in model.encoder_parameters() if parameter.requires_grad] if hold else []
    for parameter in held:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in held:
            parameter.requires_grad_(True)


@dataclass
class AdaptationRun:
    """The steps' outcome before the safeguard's verdict: what :func:`settle` needs to decide which
    weights segment the video. Split from the verdict so that one run of steps can be judged under
    several interpolations (bench/bench_adapt.py) without adapting again."""

    original: dict[str, torch.Tensor]  # the weights the model came with
    #: the checked step with the lowest held-out loss (the last without a safeguard); with several runs,
    #: the average of each run's
    best_state: dict[str, torch.Tensor]
    best_step: int  # 0: no checked step beat the starting weights (in any run)
    best_loss: float  # held-out loss of best_state (nan without a safeguard, or not measured yet: see settle)
    held_out: torch.Tensor  # indices of the held-out frames (empty: no safeguard)
    loss_before: float  # held-out loss of the original weights (nan without a safeguard)
    train_losses: list[float]

    @property
    def safeguarded(self) -> bool:
        return len(self.held_out) > 0


@dataclass
class _RunOutcome:
    """One run of steps: its checked step with the lowest held-out loss, and its training losses."""

    state: dict[str, torch.Tensor]
    step: int
    loss: float
    train_losses: list[float]


def _one_run(
    model: Segmenter,
    training_set: FlowPairDataset,
    judge: Callable[[], float] | None,
    start: tuple[dict[str, torch.Tensor], float],
    settings: AdaptationSettings,
    config: TrainConfig,
    loss_fn: LossFunction,
    seed: int,
    report_step: Callable[[int], None],
    should_cancel: Callable[[], bool] | None,
) -> _RunOutcome:
    """``settings.steps`` steps on ``model`` in place from its current weights, ``start`` (those weights
    and their held-out loss), ``judge`` (the held-out loss, None without a safeguard) measured every
    ``check_every`` steps and after the last."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(model, config)
    batch_size = min(settings.batch_size, len(training_set))
    best = _RunOutcome(state=start[0], step=0, loss=start[1], train_losses=[])
    average: dict[str, torch.Tensor] | None = None  # with average_checked: the improving checked steps' mean
    averaged, averaged_step = 0, 0  # how many steps that mean holds, and the latest of them
    model.train()
    if settings.freeze_norm:
        _set_norm_frozen(model)
    for step in range(1, settings.steps + 1):
        _check_cancel(should_cancel)
        batch: Batch = training_set.sample(batch_size, generator)
        if settings.scale != 1.0:
            batch = batch.rescaled(settings.scale)
        loss, _ = train_step(model, optimizer, loss_fn, batch, config.lr, config)
        best.train_losses.append(loss)
        if step % settings.check_every == 0 or step == settings.steps:
            current = judge() if judge is not None else math.nan
            if current < best.loss:
                best.state, best.step, best.loss = copy.deepcopy(model.state_dict()), step, current
            if settings.average_checked and (judge is None or current < start[1]):
                averaged, averaged_step = averaged + 1, step  # a running mean: one copy of the weights
                state = copy.deepcopy(model.state_dict())
                average = state if average is None else interpolate_weights(average, state, 1 / averaged)
        report_step(step)
    if average is not None:  # its held-out loss is settle's to measure
        best.state, best.step, best.loss = average, averaged_step, math.nan
    elif judge is None:
        best.state, best.step = copy.deepcopy(model.state_dict()), settings.steps
    return best


def run_adaptation_steps(
    model: Segmenter,
    dataset: FlowPairDataset,
    settings: AdaptationSettings,
    device: torch.device,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> AdaptationRun:
    """Take ``settings.steps`` steps on ``model`` in place (the held-out frames left out), checking the
    held-out loss every ``check_every`` steps, once per run of ``settings.runs`` (each from the original
    weights, with its own seed); the model ends in the last step's weights."""
    config = settings.train_config()
    loss_fn = LossFunction(config, device)
    held_out = heldout_frames(len(dataset), settings.holdout_every)
    train_frames = torch.ones(len(dataset), dtype=torch.bool)
    train_frames[held_out] = False
    training_set = dataset.subset(torch.nonzero(train_frames).flatten()) if len(held_out) else dataset
    safeguard = len(held_out) > 0

    def judge() -> float:
        return heldout_loss(model, dataset, held_out, loss_fn, settings.scale)

    original = copy.deepcopy(model.state_dict())
    before = judge() if safeguard else math.nan
    total = settings.steps * settings.runs
    if progress is not None:  # the stage starts now, not after its first step: stage timings stay true
        progress("adapting", 0, total)
    outcomes = []
    with _encoder_held(model, not settings.adapt_encoder):
        for index in range(settings.runs):
            model.load_state_dict(original)

            def report_step(step: int, done: int = index * settings.steps) -> None:
                if progress is not None:
                    progress("adapting", done + step, total)

            outcomes.append(_one_run(model, training_set, judge if safeguard else None, (original, before), settings,
                                     config, loss_fn, settings.seed + index, report_step, should_cancel))
    best_step = max(outcome.step for outcome in outcomes)
    if len(outcomes) == 1:
        best_state, best_loss = outcomes[0].state, outcomes[0].loss
    else:  # the average's held-out loss is settle's to measure, on the weights it will use
        best_state = average_weights([outcome.state for outcome in outcomes])
        best_loss = math.nan if safeguard and best_step > 0 else before
    return AdaptationRun(original=original, best_state=best_state, best_step=best_step, best_loss=best_loss,
                         held_out=held_out, loss_before=before,
                         train_losses=[loss for outcome in outcomes for loss in outcome.train_losses])


def settle(
    model: Segmenter,
    run: AdaptationRun,
    dataset: FlowPairDataset,
    settings: AdaptationSettings,
    device: torch.device,
) -> AdaptationReport:
    """The safeguard's verdict on ``run``: load into ``model`` the weights that segment the video — the
    best step's, ``settings.interpolation`` of the way from the original ones, if their held-out loss is
    at least ``keep_margin`` below the start, else the original weights — and say which, in eval mode."""
    adapted, after = run.best_state, run.best_loss
    if settings.interpolation < 1.0:
        adapted = interpolate_weights(run.original, adapted, settings.interpolation)
    if run.safeguarded and run.best_step > 0 and (settings.interpolation < 1.0 or math.isnan(after)):
        model.load_state_dict(adapted)  # the safeguard judges the weights that would be used
        after = heldout_loss(model, dataset, run.held_out, LossFunction(settings.train_config(), device),
                             settings.scale)
    keep = not run.safeguarded or after <= run.loss_before * (1 - settings.keep_margin)
    model.load_state_dict(adapted if keep else run.original)
    model.eval()
    report = AdaptationReport(
        decision="kept" if keep else "reverted",
        reverted_by=None if keep else "heldout_loss",
        steps=settings.steps,
        runs=settings.runs,
        seed=settings.seed,
        best_step=run.best_step if keep else 0,
        heldout_frames=len(run.held_out),
        heldout_loss_before=run.loss_before if run.safeguarded else None,
        heldout_loss_after=after if run.safeguarded else None,
        interpolation=settings.interpolation,
        appearance_check=keep and settings.appearance_check,
        component_check=keep and settings.component_check,
        motion_check=keep and settings.motion_check,
        flicker_before=None,
        flicker_after=None,
        train_losses=run.train_losses,
    )
    log.info("adaptation %s: held-out loss %.4f -> %.4f (best at step %d of %d, %d held-out frames)",
             report.decision, run.loss_before, after, run.best_step, settings.steps, len(run.held_out))
    return report


def adapt(
    model: Segmenter,
    dataset: FlowPairDataset,
    settings: AdaptationSettings,
    device: torch.device,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> AdaptationReport:
    """Adapt ``model`` in place on ``dataset`` for ``settings.steps`` steps, behind the safeguard.

    On return the model holds the kept weights (the best checked ones, interpolated) or, when
    reverted, exactly the weights it came with; it is in eval mode either way.
    """
    run = run_adaptation_steps(model, dataset, settings, device, progress, should_cancel)
    return settle(model, run, dataset, settings, device)


def mask_checks(report: AdaptationReport | None, settings: AdaptationSettings) -> dict[str, bool]:
    """The mask checks :func:`~models.inference.segment_frames` applies after adaptation ``report``
    (None: no step was taken): a kept adaptation's, as ``settings`` ask; none for the original weights."""
    kept = report is not None and report.decision == "kept"
    return {"appearance_check": kept and report.appearance_check,
            "component_check": kept and report.component_check,
            "motion_check": kept and report.motion_check,
            "steadiness_check": kept and settings.steadiness_check}


def adapt_and_segment(
    frames: Sequence[np.ndarray],
    checkpoint_path: str | Path,
    settings: AdaptationSettings | None = None,
    device: str = "cpu",
    merge: str | None = None,
    refine: bool = False,
    temporal: bool = False,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> VideoSegmentation:
    """Adapt a fresh copy of the checkpoint's network to ``frames`` and segment each of them.

    Args:
        frames: RGB uint8 frames (H, W, 3) of one video, in order; at least two to adapt.
        checkpoint_path: model checkpoint (``.pt``) to start from; it is never modified.
        settings: adaptation settings (``steps=0`` segments with the checkpoint as it is).
        device: ``cpu``, ``cuda`` or ``auto``.
        merge: foreground merge strategy; None uses the one recorded in the checkpoint.
        refine: snap each mask to its frame's edges (models/refinement.py).
        temporal: fuse each frame's soft mask with its neighbours' along the flow (models/temporal.py);
            computes flow even when no adaptation step is asked for.
        progress: called as (stage, done, total).
        should_cancel: polled between units of work and inside each (per layer); returning True raises
            AdaptationCancelled.
    """
    settings = settings or AdaptationSettings()
    if settings.steps > 0 and len(frames) < 2:
        raise ValueError("adaptation needs a video of at least two frames")
    temporal = temporal and len(frames) > 1  # one frame has no neighbours to fuse with
    torch_device = select_device(device)
    model, spec = load_model(checkpoint_path, torch_device)
    _check_cancel_in_layers(model, should_cancel)
    # Video frames are fed at one fixed size whatever their shape, even for a model that keeps photos'
    # aspect ratio (ModelSpec.keep_aspect): on 9:16 uploads cut from five val-dev videos, 20 steps
    # reached J 69.8 on frames stretched to 128×224 and 59.0 at 224×128 (README, Model card). The size
    # is the spec's video size, which may differ from the one single images are fed at.
    input_size = spec.video_size
    merge = merge or spec.merge
    dataset = None
    if settings.steps > 0 or temporal:
        estimator = build_flow_estimator(settings.flow_method, **settings.flow_options)

        def on_flow_pair(done: int, total: int) -> None:  # cancellation lands between two frame pairs
            if progress is not None:
                progress("flow", done, total)
            _check_cancel(should_cancel)

        gaps = settings.gaps if settings.steps > 0 else (-1, 1)
        dataset = FlowPairDataset.from_frames(frames, estimator, gaps, input_size, progress=on_flow_pair,
                                              flow_size=settings.flow_frame_size(input_size),
                                              trust_check=settings.trust_check)
    # the network before adaptation, for the mask checks: a copy in memory (with the cancel hooks)
    checks_asked = (settings.appearance_check or settings.component_check or settings.motion_check
                    or settings.steadiness_check)
    original = copy.deepcopy(model) if settings.steps > 0 and checks_asked else None
    report = adapt(model, dataset, settings, torch_device, progress, should_cancel) if settings.steps > 0 else None
    # only kept adaptations are checked (the report says which): reverted weights are the original
    checks = mask_checks(report, settings)

    def on_segmented(done: int, total: int) -> None:
        if progress is not None:
            progress("segmenting", done, total)

    masks = segment_frames(model, frames, input_size, torch_device, merge, refine,
                           flow=dataset.flow if dataset is not None else None, temporal=temporal,
                           original=original, **checks,
                           progress=on_segmented,
                           check_cancel=lambda: _check_cancel(should_cancel))
    if report is not None:
        report = report.with_steadiness(masks.steadiness)
        if report.reverted_by == "steadiness":
            log.info("adaptation reverted: its masks flicker %.3f along the flow, the original's %.3f",
                     report.flicker_after, report.flicker_before)
    return VideoSegmentation(masks=masks, adaptation=report)
