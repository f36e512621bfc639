"""The training commands of ``gwm``: flow, pseudo-label, train, eval, export, interpolate, widen, card.

The root command (:mod:`gwm_cli`) builds a command's parser with the ``configure_*`` function of that
command only when it runs, so ``gwm --help`` never imports what these defaults come from (torch).
Every sub-command calls the same library functions the service and the tests use.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import fields, replace
from enum import Enum
from pathlib import Path

from models.merge_strategy import PHOTO_MERGE, MergeStrategy
from models.preprocessing import DEFAULT_INPUT_SIZE

from .flow import DEFAULT_FLOW_METHOD, DEFAULT_RAFT_ITERATIONS, DEFAULT_RAFT_SCALE, FLOW_METHODS
from .flow_cache import PAPER_GAPS
from .frames import DEFAULT_EVAL_DATA, DEFAULT_EVAL_SPLIT, DEFAULT_RESOLUTION, DEFAULT_TRAIN_DATA

__all__ = ["configure_card", "configure_eval", "configure_export", "configure_flow", "configure_pseudo_label",
           "configure_train", "parse_size"]

log = logging.getLogger("gwm")


def _format_size(size: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in size)


def _format_gaps(gaps: tuple[int, ...]) -> str:
    return ",".join(str(v) for v in gaps)


def _names(choices: type[Enum]) -> list:
    """The values of an enum, as command-line choices."""
    return [member.value for member in choices]


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``HxW`` (e.g. 128x224)."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HxW such as {_format_size(DEFAULT_INPUT_SIZE)}, got {text!r}") from None
    return height, width


def _gaps(text: str) -> tuple[int, ...]:
    try:
        gaps = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as {_format_gaps(PAPER_GAPS)}, got {text!r}") from None
    if 0 in gaps:
        raise argparse.ArgumentTypeError("a gap of 0 has no flow")
    return gaps


def _cmd_flow(args: argparse.Namespace) -> int:
    from .flow import FlowRecipe
    from .flow_cache import FlowCache, FlowCacheSpec, default_cache_dir
    from .frames import list_sources

    videos = list_sources(args.data, args.resolution)
    options = {}
    if args.method == "raft":
        if not args.raft_weights:
            raise ValueError("--method raft needs --raft-weights FILE (e.g. ../shared/weights/raft-small.pth)")
        options = {"weights": args.raft_weights, "device": args.device, "scale": args.raft_scale,
                   "iterations": args.raft_iterations}
    recipe = FlowRecipe(args.method, options)
    recipe.build()  # fail now, in this process, on a bad weights file or option
    output = args.output or default_cache_dir(recipe.label(), args.size)
    cache = FlowCache(output, FlowCacheSpec(args.method, *args.size, gaps=args.gaps, settings=recipe.settings()))
    workers = 1 if args.device.startswith("cuda") else args.workers
    log.info("computing %s flow for %d sequences into %s with %d worker(s)", recipe.label(), len(videos), output,
             workers)
    cache.build(videos, recipe, workers=workers)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
                 if getattr(args, f.name, None) is not None}
    if args.config:
        base = TrainConfig.from_dict(json.loads(Path(args.config).read_text()))
        config = TrainConfig.from_dict({**base.__dict__, **overrides})
    else:
        config = TrainConfig.from_dict(overrides)
    path = train(config, resume=not args.restart)
    print(f"checkpoint: {path}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .evaluate import evaluate_davis, evaluate_images, format_table
    from .export import load_network
    from .train import select_device

    is_onnx = Path(args.checkpoint).suffix == ".onnx"  # the file the service serves, through onnxruntime
    device = select_device("cpu" if is_onnx else args.device)
    model, spec = load_network(args.checkpoint, device)
    step = None if is_onnx else load_checkpoint(args.checkpoint).get("step")
    input_size = spec.input_size
    merge = args.merge or spec.merge
    report: dict = {"checkpoint": str(args.checkpoint), "model_version": spec.version, "merge": merge,
                    "refine": args.refine, "step": step}
    if not args.skip_davis:
        davis = evaluate_davis(model, args.data, input_size, split=args.split, resolution=args.resolution,
                               protocol=args.protocol, device=device, merge=merge, refine=args.refine)
        report["davis"] = davis
        print(format_table(davis))
    if args.images:
        images = evaluate_images(model, Path(args.images) / "images", Path(args.images) / "masks", input_size,
                                 device=device, limit=args.limit, merge=args.image_merge, refine=args.refine,
                                 keep_aspect=spec.keep_aspect)
        report["images"] = images
        print(f"images: {images['images']}  accuracy {100 * images['pixel_accuracy']:.1f}  "
              f"J {100 * images['J']:.1f}  max F-beta {100 * images['max_F_beta']:.1f}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2))
        print(f"report: {args.output}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .checkpoint import load_model, slim_checkpoint
    from .export import export_onnx, onnx_parity

    model, spec = load_model(args.checkpoint)
    if (args.input_size or args.video_input_size) and not model.any_input_size:
        raise SystemExit(f"a {spec.architecture} network takes the input size it was built for only: "
                         "export it without --input-size and --video-input-size")
    spec = replace(spec, version=args.version or spec.version, merge=args.merge or spec.merge,
                   keep_aspect=spec.keep_aspect if args.aspect is None else args.aspect == "keep",
                   input_size=args.input_size or spec.input_size,
                   video_input_size=args.video_input_size or spec.video_size)
    path = export_onnx(model, spec, args.output)
    difference = max(onnx_parity(model, path, size=size)
                     for size in dict.fromkeys([spec.input_size, spec.input_size_for(spec.input_size[::-1])]))
    print(f"onnx: {path}  parity max |onnx - torch| / max |torch| = {difference:.2e}")
    if args.slim_checkpoint:
        slim_checkpoint(args.checkpoint, args.slim_checkpoint, spec=spec)
        print(f"slim checkpoint: {args.slim_checkpoint}")
    if difference >= args.tolerance:
        log.error("onnxruntime and PyTorch differ by %.2e, more than --tolerance %g", difference, args.tolerance)
        return 1
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .model_card import (
        build_model_card,
        inference_cost,
        interpolation_record,
        training_summary,
        with_initial_training,
    )

    if args.initialised_from and not args.run_dir:
        raise SystemExit("--initialised-from goes with --run-dir (the run that started from those weights)")
    if args.interpolation_alpha is not None and not args.initialised_from:
        raise SystemExit("--interpolation-alpha goes with --initialised-from (the weights interpolated from)")
    for option, value in (("--interpolation-end", args.interpolation_end),
                          ("--interpolation-start", args.interpolation_start)):
        if value is not None and args.interpolation_alpha is None:
            raise SystemExit(f"{option} goes with --interpolation-alpha (how far the weights were interpolated)")
    model, spec = load_model(args.checkpoint)
    if args.run_dir:
        training = training_summary(args.run_dir)
        if args.initialised_from:
            training = with_initial_training(training, json.loads(Path(args.initialised_from).read_text()))
        if args.interpolation_alpha is not None:
            start_version = (json.loads(Path(args.interpolation_start).read_text())["version"]
                             if args.interpolation_start else None)
            training["weight_interpolation"] = interpolation_record(training, args.interpolation_alpha, args.run_dir,
                                                                    args.interpolation_end or "last.pt", start_version)
    else:
        training = json.loads(Path(args.training_from).read_text())["training"]
    card = build_model_card(
        name=args.name, spec=spec, cost=inference_cost(model, spec, args.onnx),
        training=training, evaluation=json.loads(Path(args.eval).read_text()),
    )
    Path(args.output).write_text(json.dumps(card, indent=2))
    print(f"model card: {args.output}")
    return 0


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    from models.distillation import DISTILLED_REGIONS
    from models.motion import MotionModel, WeightPower
    from models.segmenters import ARCHITECTURES

    from .train import AUTO_MERGE, TrainConfig

    defaults = TrainConfig()
    group = parser.add_argument_group("training options (defaults follow the paper's U-Net where the CPU allows)")
    group.add_argument("--config", help="JSON file with TrainConfig fields (command-line options override it; default none)")
    group.add_argument("--data", nargs="+", metavar="ROOT[:SPLITS]",
                       help="frame roots to train on, each ROOT or ROOT:SPLIT[,SPLIT] "
                            f"(default {' '.join(defaults.data)}: val-dev stays unseen)")
    group.add_argument("--eval-data", dest="eval_data",
                       help=f"annotated DAVIS root whose val-dev split --eval-every measures (default {defaults.eval_data})")
    group.add_argument("--flow-cache", dest="flow_cache", help=f"flow cache from `gwm flow` (default {defaults.flow_cache})")
    group.add_argument("--output-dir", dest="output_dir", help=f"run directory (default {defaults.output_dir})")
    group.add_argument("--architecture", choices=sorted(ARCHITECTURES), help=f"segmenter (default {defaults.architecture})")
    group.add_argument("--width", type=int, help=f"U-Net first-stage channels (default {defaults.width}; paper 64)")
    group.add_argument("--backbone", help="timm model of --architecture backbone, e.g. resnet50 or "
                                          f"vit_small_patch8_224 (default {defaults.backbone})")
    group.add_argument("--backbone-weights", dest="backbone_weights",
                       help="local file (.pth, .bin, .safetensors) with pretrained weights of that timm model; "
                            "read when a run starts, never downloaded (default none: random weights)")
    group.add_argument("--num-regions", dest="num_regions", type=int, help=f"K (default {defaults.num_regions})")
    group.add_argument("--input-size", dest="input_size", type=parse_size,
                       help=f"network input HxW (default {_format_size(defaults.input_size)})")
    group.add_argument("--loss-size", dest="loss_size", type=parse_size, help="loss grid HxW (default: flow cache grid; paper 480x854)")
    group.add_argument("--motion-model", dest="motion_model", choices=_names(MotionModel),
                       help=f"flow model per region (default {defaults.motion_model})")
    group.add_argument("--weight-power", dest="weight_power", type=int, choices=_names(WeightPower),
                       help=f"fit weights p ({WeightPower.PAPER.value}: paper) or p^2 "
                            f"({WeightPower.REFERENCE_CODE.value}: authors' code) (default {defaults.weight_power})")
    group.add_argument("--colour-jitter", dest="colour_jitter", type=float,
                       help="brightness/contrast/saturation jitter strength, e.g. 0.4 "
                            f"(default {defaults.colour_jitter:g}: none, as the paper)")
    group.add_argument("--grey-probability", dest="grey_probability", type=float,
                       help=f"chance a frame is made grey (default {defaults.grey_probability:g})")
    group.add_argument("--blur-probability", dest="blur_probability", type=float,
                       help=f"chance of a Gaussian blur (default {defaults.blur_probability:g})")
    group.add_argument("--max-zoom", dest="max_zoom", type=float,
                       help="random zoom crops up to this factor, flow cropped and scaled with the frame "
                            f"(default {defaults.max_zoom}: no crops)")
    group.add_argument("--copy-paste", dest="copy_paste", type=float,
                       help="chance a frame receives what moves unlike its background in another frame of the "
                            "batch, pixels and flow, found from the flow alone "
                            f"(default {defaults.copy_paste:g}: none, as the paper)")
    group.add_argument("--paste-relative-flow", dest="paste_relative_flow", action="store_const", const=True,
                       help="paste the donor's motion relative to its own background onto the receiver's background "
                            "motion, so that every pasted thing moves unlike its new background (default: its flow "
                            "as it is)")
    group.add_argument("--pseudo-labels", dest="pseudo_labels",
                       help="folder of teacher masks from gwm pseudo-label, taught beside the flow loss "
                            "(self-training; default none, as the paper)")
    group.add_argument("--pseudo-label-weight", dest="pseudo_label_weight", type=float,
                       help=f"weight of the teacher masks' loss (default {defaults.pseudo_label_weight:g})")
    group.add_argument("--pseudo-label-regions", dest="pseudo_label_regions", choices=DISTILLED_REGIONS,
                       help="teach the masks to the regions that match them best, or to those and to the ones "
                            "the label-free merge picks (border or framed) "
                            f"(default {defaults.pseudo_label_regions})")
    group.add_argument("--flow-trust-check", dest="flow_trust_check", action="store_const", const=True,
                       help="zero weight for flow failing the forward-backward check (default off, as the paper)")
    group.add_argument("--steps", type=int, help=f"training steps (default {defaults.steps})")
    group.add_argument("--batch-size", dest="batch_size", type=int, help=f"default {defaults.batch_size}")
    group.add_argument("--lr", type=float, help=f"peak learning rate (default {defaults.lr})")
    group.add_argument("--warmup-steps", dest="warmup_steps", type=int, help=f"default {defaults.warmup_steps}")
    group.add_argument("--grad-clip", dest="grad_clip", type=float, help=f"default {defaults.grad_clip}")
    group.add_argument("--coarse-steps", dest="coarse_steps", type=int,
                       help=f"first N steps at {defaults.coarse_scale:g} x the input size (a cheap resolution "
                            f"schedule; default {defaults.coarse_steps})")
    group.add_argument("--ema-decay", dest="ema_decay", type=float,
                       help="keep an exponential moving average of the weights beside them, written as ema.pt and "
                            f"scored by --eval-every, e.g. 0.999 (default {defaults.ema_decay:g}: none, as the paper)")
    group.add_argument("--snapshot-every", dest="snapshot_every", type=int, help=f"keep step_<N>.pt every N steps (default {defaults.snapshot_every}: never)")
    group.add_argument("--eval-every", dest="eval_every", type=int, help=f"J on val-dev every N steps (0 = never; default {defaults.eval_every})")
    group.add_argument("--init-from", dest="init_from",
                       help="start from these model weights, e.g. models/weights/gwm-default.pt (fresh optimiser; "
                            "default: from scratch)")
    group.add_argument("--merge", choices=[AUTO_MERGE, *_names(MergeStrategy)],
                       help=f"merge recorded in the model (default {defaults.merge}: border for unet, spectral for "
                            "backbone)")
    group.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    group.add_argument("--device", help=f"auto, cpu or cuda (default {defaults.device})")
    group.add_argument("--seed", type=int, help=f"random seed (default {defaults.seed})")
    group.add_argument("--version", help=f"model version stored in checkpoints (default {defaults.version})")
    group.add_argument("--restart", action="store_true", help="ignore an existing last.pt instead of resuming")


def configure_flow(flow: argparse.ArgumentParser) -> None:
    """``gwm flow``: precompute optical flow for a dataset (resumable)."""
    flow.description = ("Compute optical flow from each frame to frame+gap for every sequence and "
                        "store it compactly (float16) for training. Re-running resumes.")
    flow.add_argument("--data", nargs="+", default=list(DEFAULT_TRAIN_DATA), metavar="ROOT[:SPLITS]",
                      help="frame roots, each ROOT (every sequence) or ROOT:SPLIT[,SPLIT] (ImageSets lists); "
                           f"default {' '.join(DEFAULT_TRAIN_DATA)}")
    flow.add_argument("--resolution", default=DEFAULT_RESOLUTION,
                      help=f"JPEGImages sub-folder (default {DEFAULT_RESOLUTION})")
    flow.add_argument("--method", default=DEFAULT_FLOW_METHOD, choices=sorted(FLOW_METHODS),
                      help=f"estimator (default {DEFAULT_FLOW_METHOD}; raft needs --raft-weights)")
    flow.add_argument("--raft-weights", help="local RAFT weights file, official release or torchvision format "
                                             "(needed for --method raft; default none), e.g. ../shared/weights/raft-small.pth")
    flow.add_argument("--raft-scale", type=float, default=DEFAULT_RAFT_SCALE,
                      help=f"RAFT runs on frames resized by this factor (default {DEFAULT_RAFT_SCALE:g})")
    flow.add_argument("--raft-iterations", type=int, default=DEFAULT_RAFT_ITERATIONS,
                      help=f"RAFT refinement iterations (default {DEFAULT_RAFT_ITERATIONS})")
    flow.add_argument("--device", default="cpu", help="device for RAFT: cpu (default) or cuda")
    flow.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                      help="processes on the CPU, one thread each (default: one per core)")
    flow.add_argument("--size", type=parse_size, default=DEFAULT_INPUT_SIZE,
                      help=f"stored grid HxW (default {_format_size(DEFAULT_INPUT_SIZE)}, the network input)")
    flow.add_argument("--gaps", type=_gaps, default=PAPER_GAPS,
                      help=f"frame gaps (default {_format_gaps(PAPER_GAPS)} as in the paper)")
    flow.add_argument("--output", help="cache directory (default cache/flow-<method>-<H>x<W>, where gwm train looks)")
    flow.set_defaults(handler=_cmd_flow)


def configure_train(train: argparse.ArgumentParser) -> None:
    """``gwm train``: train a segmenter on precomputed flow (resumes from last.pt)."""
    train.description = "Train a segmenter on precomputed flow with the GWM loss; resumes from last.pt."
    _add_train_options(train)
    train.set_defaults(handler=_cmd_train)


def configure_eval(evaluate: argparse.ArgumentParser) -> None:
    """``gwm eval``: DAVIS J (merged/oracle) and image metrics of a checkpoint."""
    from .evaluate import PROTOCOLS

    evaluate.description = "DAVIS J (merged and oracle) and, with --images, image metrics of a checkpoint."
    evaluate.add_argument("checkpoint", help="model checkpoint (.pt) or exported model (.onnx, run by onnxruntime)")
    evaluate.add_argument("--data", default=DEFAULT_EVAL_DATA,
                          help=f"annotated DAVIS root (default {DEFAULT_EVAL_DATA})")
    evaluate.add_argument("--split", default=DEFAULT_EVAL_SPLIT,
                          help=f"ImageSets split to evaluate (default {DEFAULT_EVAL_SPLIT})")
    evaluate.add_argument("--resolution", default=DEFAULT_RESOLUTION,
                          help=f"JPEGImages sub-folder (default {DEFAULT_RESOLUTION})")
    evaluate.add_argument("--protocol", default="davis", choices=PROTOCOLS,
                          help="davis (default): official (first/last frame excluded, empty/empty=1); "
                               "gwm-reference: authors' code")
    evaluate.add_argument("--images", help="ECSSD-style folder with images/ and masks/ for image metrics (default: none)")
    evaluate.add_argument("--limit", type=int, help="evaluate only the first N images (default: all)")
    evaluate.add_argument("--merge", choices=_names(MergeStrategy),
                          help="label-free merge of the DAVIS frames (default: the one recorded in the model)")
    evaluate.add_argument("--image-merge", choices=_names(MergeStrategy), default=PHOTO_MERGE.value,
                          help=f"label-free merge of the --images photos (default {PHOTO_MERGE.value}, what /segment "
                               "uses)")
    evaluate.add_argument("--refine", action="store_true",
                          help="snap masks to image edges with a guided filter before scoring (default off)")
    evaluate.add_argument("--skip-davis", action="store_true", help="only image metrics")
    evaluate.add_argument("--device", default="auto", help="auto (default: CUDA if available), cpu or cuda")
    evaluate.add_argument("--output", help="write the full report as JSON here (default: print only)")
    evaluate.set_defaults(handler=_cmd_eval)


def configure_export(export: argparse.ArgumentParser) -> None:
    """``gwm export``: export a checkpoint to ONNX and check parity with PyTorch."""
    export.description = ("Export a checkpoint to ONNX with the metadata the service reads, and check that "
                          "onnxruntime's outputs match PyTorch's.")
    export.add_argument("checkpoint", help="model checkpoint (.pt) to export")
    export.add_argument("output", help="ONNX file to write")
    export.add_argument("--version", help="model version to record in the metadata (default: the checkpoint's)")
    export.add_argument("--merge", choices=_names(MergeStrategy),
                        help="merge strategy to record in the exported model (default: the checkpoint's own)")
    export.add_argument("--aspect", choices=["keep", "stretch"],
                        help="feed each photo in its own aspect ratio at the input size's pixel count (keep; the "
                             "ONNX graph then takes any height and width) or stretched to the input size (stretch, "
                             "the paper) (default: the checkpoint's own)")
    export.add_argument("--input-size", type=parse_size,
                        help="input HxW to record, the size the service feeds the network (with --aspect keep: its "
                             "pixel count); a fully convolutional network may segment unseen images better at another "
                             "size than it was trained at: measure with bench/bench_input_size.py (default: the "
                             "checkpoint's own)")
    export.add_argument("--video-input-size", type=parse_size,
                        help="input HxW video jobs feed every frame at, to adapt and to segment (default: the "
                             "checkpoint's video size, which is its input size unless recorded otherwise; "
                             "--input-size leaves it alone)")
    export.add_argument("--slim-checkpoint",
                        help="also write a weights-only float16 checkpoint here, for shipping (default: none)")
    export.add_argument("--tolerance", type=float, default=1e-4,
                        help="fail if ONNX and PyTorch differ more, relative to the largest output (default 1e-4)")
    export.set_defaults(handler=_cmd_export)


def _cmd_interpolate(args: argparse.Namespace) -> int:
    from .checkpoint import interpolate_checkpoints

    spec = interpolate_checkpoints(args.start, args.end, args.output, alpha=args.alpha, version=args.version)
    end = args.end[0] if len(args.end) == 1 else f"mean({', '.join(args.end)})"
    print(f"checkpoint: {args.output}  ({1 - args.alpha:g} x {args.start} + {args.alpha:g} x {end}, "
          f"version {spec.version})")
    return 0


def configure_interpolate(interpolate: argparse.ArgumentParser) -> None:
    """``gwm interpolate``: weight-space interpolation of a model and its fine-tuned descendant."""
    interpolate.description = ("Write (1 - alpha) x START + alpha x END, weight by weight (WiSE-FT): for END "
                               "trained from START with gwm train --init-from. Several ENDs (one recipe, "
                               "different seeds) are averaged first (a model soup).")
    interpolate.add_argument("start", help="the starting weights (.pt), e.g. models/weights/gwm-default.pt")
    interpolate.add_argument("end", nargs="+",
                             help="the weights trained from them (.pt), e.g. runs/more/last.pt; several are averaged")
    interpolate.add_argument("--alpha", type=float, default=0.5,
                             help="how far towards END, 0 to 1 (default 0.5, the midpoint)")
    interpolate.add_argument("--version", help="model version to record (default: the first END's)")
    interpolate.add_argument("--output", required=True, help="checkpoint to write (.pt)")
    interpolate.set_defaults(handler=_cmd_interpolate)


def _cmd_widen(args: argparse.Namespace) -> int:
    from .checkpoint import widen_checkpoint

    spec = widen_checkpoint(args.source, args.output, args.width, noise=args.noise, seed=args.seed,
                            version=args.version)
    print(f"checkpoint: {args.output}  ({args.source} widened to width {args.width}, noise {args.noise:g}, "
          f"version {spec.version})")
    return 0


def configure_widen(widen: argparse.ArgumentParser) -> None:
    """``gwm widen``: a trained U-Net in a wider network that computes the same (Net2WiderNet)."""
    widen.description = ("Write SOURCE's U-Net widened to --width: every stage gains copies of its own channels "
                         "and the layers reading them split their weights, so the wider network computes the "
                         "same masks (exactly with --noise 0). Train it on with gwm train --init-from OUTPUT "
                         "--width WIDTH.")
    widen.add_argument("source", help="the trained weights (.pt), e.g. models/weights/gwm-default.pt")
    widen.add_argument("--width", type=int, required=True, help="channels of the first stage, at least SOURCE's")
    widen.add_argument("--noise", type=float, default=0.0,
                       help="noise on the copied channels' weights, relative to each layer's spread; it lets "
                            "the copies part ways under AdamW, which keeps exact copies equal (default 0: exact)")
    widen.add_argument("--seed", type=int, default=0, help="seed of the channels copied and the noise (default 0)")
    widen.add_argument("--version", help="model version to record (default: SOURCE's)")
    widen.add_argument("--output", required=True, help="checkpoint to write (.pt)")
    widen.set_defaults(handler=_cmd_widen)


def _cmd_pseudo_label(args: argparse.Namespace) -> int:
    from .adapt import AdaptationSettings
    from .frames import list_sources
    from .pseudo_labels import write_pseudo_labels

    videos = list_sources(args.data, args.resolution)
    settings = AdaptationSettings(steps=args.steps, seed=args.seed)
    output = write_pseudo_labels(videos, args.checkpoint, args.output, settings,
                                 refine=args.refine, temporal=args.temporal)
    print(f"pseudo-labels: {output}")
    return 0


def configure_pseudo_label(pseudo_label: argparse.ArgumentParser) -> None:
    """``gwm pseudo-label``: masks of the training videos from a network adapted to each (self-training)."""
    from .adapt import AdaptationSettings

    defaults = AdaptationSettings()
    pseudo_label.description = ("Adapt a copy of CHECKPOINT's network to each training video, as POST "
                                "/adapt-and-segment does, and write its masks (a PNG per frame) under --output; "
                                "gwm train --pseudo-labels OUTPUT then teaches them to the single-frame network "
                                "beside the flow loss. Re-running resumes.")
    pseudo_label.add_argument("checkpoint", help="the teacher's weights (.pt), e.g. models/weights/gwm-default.pt")
    pseudo_label.add_argument("--data", nargs="+", default=list(DEFAULT_TRAIN_DATA), metavar="ROOT[:SPLITS]",
                              help=f"frame roots (default {' '.join(DEFAULT_TRAIN_DATA)}: never val-dev)")
    pseudo_label.add_argument("--resolution", default=DEFAULT_RESOLUTION,
                              help=f"JPEGImages sub-folder (default {DEFAULT_RESOLUTION})")
    pseudo_label.add_argument("--steps", type=int, default=defaults.steps,
                              help=f"adaptation steps per video (default {defaults.steps}, the service's)")
    pseudo_label.add_argument("--seed", type=int, default=defaults.seed,
                              help=f"adaptation seed (default {defaults.seed})")
    pseudo_label.add_argument("--refine", action=argparse.BooleanOptionalAction, default=True,
                              help="snap masks to image edges (default on, as the service)")
    pseudo_label.add_argument("--temporal", action=argparse.BooleanOptionalAction, default=True,
                              help="fuse each mask with its neighbours' along the flow (default on, as the service)")
    pseudo_label.add_argument("--output", required=True, help="folder of the masks, e.g. runs/pseudo-labels")
    pseudo_label.set_defaults(handler=_cmd_pseudo_label)


def configure_card(card: argparse.ArgumentParser) -> None:
    """``gwm card``: write a model card (JSON) from a run, an eval report and an ONNX file."""
    card.description = "Write a model card (JSON) from a training run, an evaluation report and an ONNX file."
    card.add_argument("checkpoint", help="the shipped checkpoint (.pt)")
    card.add_argument("--onnx", required=True, help="the exported ONNX file (its CPU latency is measured)")
    source = card.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-dir", help="training run directory (config.json, log.jsonl, eval/)")
    source.add_argument("--training-from", dest="training_from",
                        help="an earlier card of the same weights whose training section is kept "
                             "(re-carding after a re-export, when the run directory is gone)")
    card.add_argument("--initialised-from", dest="initialised_from",
                      help="with --run-dir of a run started by --init-from: the card of those starting "
                           "weights, kept under training.initialised_from (default none)")
    card.add_argument("--interpolation-alpha", dest="interpolation_alpha", type=float,
                      help="with --initialised-from: the checkpoint is `gwm interpolate --alpha` of the "
                           "starting weights and the run's last.pt (default: it is the run's own)")
    card.add_argument("--interpolation-end", dest="interpolation_end",
                      help="with --interpolation-alpha: the run's file that was interpolated towards, e.g. "
                           "ema.pt for the moving average of `gwm train --ema-decay` (default last.pt)")
    card.add_argument("--interpolation-start", dest="interpolation_start",
                      help="with --interpolation-alpha: the card of the weights interpolated from, where they "
                           "are not the run's starting weights but an earlier generation's (default: the "
                           "--initialised-from card)")
    card.add_argument("--eval", required=True, help="report from `gwm eval --output`")
    card.add_argument("--name", default="gwm-default", help="model name in the card (default gwm-default)")
    card.add_argument("--output", required=True, help="card JSON file to write")
    card.set_defaults(handler=_cmd_card)
