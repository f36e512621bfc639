"""Test-time adaptation levers on DAVIS val-dev as users upload it: J gained per second, and the safeguard.

    python bench/bench_adapt.py models/weights/gwm-default.pt
    python bench/bench_adapt.py models/weights/gwm-default.pt --variants paper fast --max-sequences 4
    python bench/bench_adapt.py models/weights/gwm-default.pt --variants fast-b16 --interpolations 0.5 0.75 1 --seeds 4
    python bench/bench_adapt.py models/weights/gwm-default.pt --variants fast-b16 --compare-check motion --seeds 2

Each sequence is made into an H.264 MP4 with PyAV (crf 23, by default 2x upscaled to 854x480, the
way a phone video arrives), decoded again, and adapted in isolation from the checkpoint, exactly
as a `/adapt-and-segment` job does (the library functions the worker calls). J uses the official
DAVIS frame protocol (first and last frames excluded) against the 480p annotations; the flicker
column is 1 - mean IoU of consecutive masks after flow warping (models/temporal.py), measured on
the network grid with the video's own +1 flow.

Variants (AdaptationSettings overrides; `paper` is App. C.1: batch 16 at full input size, every
step kept; the others add the safeguard unless named `-noguard`):
    paper, fast-noguard, fast, fast-trust, fast-frozen, fast-flow240 (DIS at 240×427, not at the network's grid),
    fast-raft, fast-raft-flow128,
    fast-raft-g1 (gaps -1, 1 only), fast-raft-g1-i4 (and 4 RAFT iterations), fast-full, fast-raft-full (the adapted
    weights, not the midpoint with the original ones), fast-lr2e-4 (adaptation rate 2e-4), fast-nocheck,
    fast-raft-nocheck (without the appearance, component, motion and steadiness checks, models/appearance.py,
    models/connectivity.py, models/motion_check.py and models/steadiness.py), fast-decoder (the encoder's weights held), fast-b16 (the paper's batch of 16,
    at half the input size: the service default), fast-b16-runs2 (two runs of its steps, their weights averaged),
    fast-b16-avg (the checked steps that beat the start averaged, not the best one)
`fast` = batch 8, adaptation at half the input size, the midpoint weights, the appearance, component and
motion checks (the component check since 2026-12-06, the motion check since its third session: rows
measured before ran without them), DIS flow at the
network's grid (the service default until 2026-12-03; `fast-b16`, batch 16, is the default now);
`-raft` variants need --raft-weights. The table prints per variant: mean J, gain over 0 steps, the worst
video's change (of the seeds' mean; "worst run": of any single seed, what one user's job gets), the seeds'
spread (standard deviation of a video's J over seeds, mean over videos), kept/reverted counts, seconds of flow and
adaptation per video, J gained per second and IoU0 (mean IoU of the adapted masks with the 0-step ones: how far
adaptation moved them); then per video for --detail (default: the service default, i.e. the
variant matching AdaptationSettings()) with and without temporal fusion.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import json
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.inference import segment_frames
from models.steadiness import flicker as mask_flicker
from training.adapt import AdaptationSettings, mask_checks, run_adaptation_steps, settle
from training.checkpoint import load_model
from training.data import FlowPairDataset
from training.evaluate import jaccard, read_annotation
from training.flow import build_flow_estimator
from training.frames import DEFAULT_EVAL_DATA, VideoFolder, list_sequences

DATA = (REPO / DEFAULT_EVAL_DATA).resolve()
FAST = {"batch_size": 8, "scale": 0.5}
VARIANTS: dict[str, dict] = {
    "paper": {"batch_size": 16, "scale": 1.0, "holdout_every": 0, "interpolation": 1.0, "appearance_check": False,
              "component_check": False, "motion_check": False, "steadiness_check": False},
    "fast-noguard": {**FAST, "holdout_every": 0},
    "fast": FAST,
    "fast-trust": {**FAST, "trust_check": True},
    "fast-frozen": {**FAST, "freeze_norm": True},
    "fast-flow240": {**FAST, "flow_size": (240, 427)},  # the default before 2026-12-03: DIS at 240p
    "fast-raft": {**FAST, "flow_method": "raft"},
    "fast-raft-full": {**FAST, "flow_method": "raft", "interpolation": 1.0},
    "fast-raft-flow128": {**FAST, "flow_method": "raft", "flow_size": (128, 224)},
    "fast-raft-g1": {**FAST, "flow_method": "raft", "gaps": (-1, 1)},
    "fast-raft-g1-i4": {**FAST, "flow_method": "raft", "gaps": (-1, 1), "flow_options": {"iterations": 4}},
    "fast-full": {**FAST, "interpolation": 1.0},  # the adapted weights as they are, not the midpoint
    "fast-nocheck": {**FAST, "appearance_check": False, "component_check": False, "motion_check": False,
                     "steadiness_check": False},  # no check
    "fast-raft-nocheck": {**FAST, "flow_method": "raft", "appearance_check": False, "component_check": False,
                          "motion_check": False, "steadiness_check": False},
    "fast-lr2e-4": {**FAST, "lr": 2e-4},  # a third of the paper's rate: smaller moves away from the shipped weights
    "fast-decoder": {**FAST, "adapt_encoder": False},  # the encoder's weights held: decoder and head adapt
    "fast-b16": {**FAST, "batch_size": 16},  # the paper's batch, at half the input size: the default since 2026-12-03
    "fast-b16-runs2": {**FAST, "batch_size": 16, "runs": 2},  # two runs of the steps, their weights averaged
    "fast-b16-avg": {**FAST, "batch_size": 16, "average_checked": True},  # the improving checked steps averaged
}


def encode_h264(frames: list[np.ndarray], scale: int = 2, crf: int = 23, fps: int = 24) -> bytes:
    """``frames`` upscaled ``scale``x (even size) and encoded as an H.264 MP4 with libx264 at ``crf``.

    The same frames give the same bytes in every run, so that two runs of a bench upload the same
    videos. Measured (2026-12-06, PyAV 18.1's libx264 on an Intel Xeon): with x264's assembly the
    bytes, and the decoded frames, differed from one call to the next even on one thread (not without
    the lookahead's macroblock tree) — a 0-step J moved by up to 0.8 on a video between runs. x264's C
    code is its reference (its assembly is checked against it), so the bench encodes with it, on one
    thread: the same video a user's phone would send, reproducibly.
    """
    height, width = (2 * (s * scale // 2) for s in frames[0].shape[:2])
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps,
                                      options={"crf": str(crf), "x264-params": "threads=1:no-asm=1"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            large = cv2.resize(frame, (width, height), interpolation=cv2.INTER_CUBIC) if scale != 1 else frame[:height, :width]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(large), format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def decode_video(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def h264_round_trip(frames: list[np.ndarray], scale: int = 2, crf: int = 23) -> list[np.ndarray]:
    """``frames`` as a user's upload delivers them: :func:`encode_h264`, then decoded by PyAV."""
    return decode_video(encode_h264(frames, scale, crf))


def val_dev_videos(data: str, names: list[str] | None = None, limit: int | None = None) -> list[VideoFolder]:
    """The val-dev sequences of ``data``: those ``names`` (all when None), the first ``limit`` of them."""
    videos = list_sequences(data, "240p", ["val-dev"])
    if names:
        unknown = set(names) - {video.name for video in videos}
        if unknown:
            raise SystemExit(f"not in val-dev: {', '.join(sorted(unknown))}")
        videos = [video for video in videos if video.name in names]
    return videos[:limit]


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    """--data, --sequences and --max-sequences: which val-dev videos a bench runs on."""
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--sequences", nargs="+", metavar="NAME", help="only these val-dev sequences")
    parser.add_argument("--max-sequences", type=int)


def sequence_j(masks: list[np.ndarray], truths: list[np.ndarray]) -> float:
    """DAVIS J mean: first and last frames excluded, masks scaled (nearest) to the annotation."""
    scores = []
    for mask, truth in zip(masks[1:-1], truths[1:-1]):
        if mask.shape != truth.shape:
            mask = cv2.resize(mask.astype(np.uint8), truth.shape[::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
        scores.append(jaccard(mask, truth))
    return float(np.mean(scores))


def flicker(masks: list[np.ndarray], dataset: FlowPairDataset) -> float:
    """1 − mean temporal IoU on the dataset's grid (its +1 flow)."""
    h, w = dataset.flow.flows.shape[2:4]
    small = torch.from_numpy(np.stack([cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
                                       for m in masks]).astype(bool))
    return mask_flicker(small, dataset.flow)


#: The mask checks --compare-check can judge each run with and without, and their rows' suffixes.
COMPARED_CHECKS = {"appearance": "ac", "component": "cc", "motion": "mc", "steadiness": "sc"}


def label_of(variant: str, alpha: float | None, interpolations: list[float] | None, compared: str | None,
             checked: bool | None) -> str:
    """A table row's name: the variant, with the interpolation when --interpolations asks for several,
    and +cc / -cc (or +ac, +mc) when --compare-check judges each run with and without that check."""
    label = f"{variant}@{alpha:g}" if interpolations else variant
    return label if checked is None else label + ("+" if checked else "-") + COMPARED_CHECKS[compared]


def summarise(runs: list[dict], flow_s: float) -> dict:
    """One video's figures for one row: the seeds' means, and the spread and worst case a user can meet."""
    summary = {key: float(np.mean([run[key] for run in runs])) for key in ("J", "kept", "adapt_s", "agreement")}
    js = [run["J"] for run in runs]  # a user gets one run: its spread and its worst case count too
    summary.update(J_sd=float(np.std(js)), J_min=float(min(js)), flow_s=flow_s, before=runs[-1]["before"],
                   after=runs[-1]["after"], decision="kept" if runs[-1]["kept"] else "reverted")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    add_video_arguments(parser)
    parser.add_argument("--steps", type=int, default=AdaptationSettings.steps)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--detail", help="row shown per video, a variant or VARIANT@ALPHA (default: the last)")
    parser.add_argument("--seeds", type=int, default=1, help="adapt each video with seeds 0..N-1; J is their mean")
    parser.add_argument("--upscale", type=int, default=2, help="upload size: 2 = 854x480 (default), 1 = 427x240")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, as a worker has (default 2)")
    parser.add_argument("--raft-weights", help="local RAFT-small weights, for the -raft variants")
    parser.add_argument("--interpolations", type=float, nargs="+",
                        help="judge each run of steps at these interpolations too (rows VARIANT@ALPHA): the same "
                             "steps, so the rows differ by the interpolation alone")
    parser.add_argument("--records", type=Path,
                        help="write every run (video, row, seed, J, 0-step J, kept, held-out losses) to this JSON file: "
                             "what a verdict made afterwards (another keep margin) would have done can be read off it")
    parser.add_argument("--compare-check", choices=list(COMPARED_CHECKS),
                        help="judge each run of steps with and without this mask check (rows VARIANT-cc and "
                             "VARIANT+cc for the component check, -ac/+ac, -mc/+mc): the same weights, so the rows "
                             "differ by the check alone")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    model, spec = load_model(args.checkpoint)
    input_size, merge = spec.video_size, spec.merge
    compared_states = [False, True] if args.compare_check else [None]
    labels = [label_of(name, alpha, args.interpolations, args.compare_check, checked) for name in args.variants
              for alpha in (args.interpolations or [None]) for checked in compared_states]
    detail = args.detail or labels[-1]
    videos = val_dev_videos(args.data, args.sequences, args.max_sequences)
    rows: list[dict] = []
    records: list[dict] = []
    datasets: dict[tuple, FlowPairDataset] = {}
    for video in videos:
        frames = h264_round_trip([video.read(i) for i in range(len(video))], scale=args.upscale)
        truths = [read_annotation(args.data, video, i) for i in range(len(video))]
        row: dict = {"sequence": video.name, "frames": len(frames)}
        start = time.perf_counter()
        masks0 = list(segment_frames(model, frames, input_size, device, merge))
        row["segment_s"] = time.perf_counter() - start
        row["J0"] = sequence_j(masks0, truths)
        datasets.clear()
        for name in args.variants:
            settings = AdaptationSettings(steps=args.steps, **VARIANTS[name])
            if settings.flow_method == "raft":
                settings = dataclasses.replace(settings, flow_options={**settings.flow_options, "weights": args.raft_weights})
            flow_size = settings.flow_frame_size(input_size)
            key = (settings.flow_method, flow_size, settings.trust_check, settings.gaps,
                   tuple(sorted(settings.flow_options.items())))
            start = time.perf_counter()
            if key not in datasets:
                estimator = build_flow_estimator(settings.flow_method, **settings.flow_options)
                datasets[key] = FlowPairDataset.from_frames(frames, estimator,
                                                            settings.gaps, input_size, flow_size=flow_size,
                                                            trust_check=settings.trust_check)
            dataset = datasets[key]
            flow_s = time.perf_counter() - start
            alphas = args.interpolations or [settings.interpolation]
            runs: dict[str, list[dict]] = {label_of(name, alpha, args.interpolations, args.compare_check, checked): []
                                           for alpha in alphas for checked in compared_states}
            for seed in range(args.seeds):  # adaptation is stochastic (batches, flips): the mean over seeds
                adapted = copy.deepcopy(model)
                start = time.perf_counter()
                steps = run_adaptation_steps(adapted, dataset, dataclasses.replace(settings, seed=seed), device)
                steps_s = time.perf_counter() - start
                for alpha in alphas:  # one run of steps, judged at each interpolation asked
                    start = time.perf_counter()
                    report = settle(adapted, steps, dataset, dataclasses.replace(settings, interpolation=alpha), device)
                    adapt_s = steps_s + time.perf_counter() - start
                    for checked in compared_states:  # and with and without the compared check, if asked
                        label = label_of(name, alpha, args.interpolations, args.compare_check, checked)
                        checks = mask_checks(report, settings)
                        if checked is not None:
                            checks[f"{args.compare_check}_check"] = report.decision == "kept" and checked
                        segmented = segment_frames(adapted, frames, input_size, device, merge, flow=dataset.flow,
                                                   original=model, **checks)
                        masks = list(segmented)
                        kept = report.with_steadiness(segmented.steadiness).decision == "kept"
                        runs[label].append({"seed": seed, "J": sequence_j(masks, truths), "kept": kept,
                                            "adapt_s": adapt_s,
                                            "agreement": np.mean([jaccard(a, b) for a, b in zip(masks0, masks)]),
                                            "before": report.heldout_loss_before, "after": report.heldout_loss_after})
                        if label != detail or seed != args.seeds - 1:
                            continue
                        fused = list(segment_frames(adapted, frames, input_size, device, merge, flow=dataset.flow,
                                                    temporal=True, original=model, **checks))
                        fused0 = list(segment_frames(model, frames, input_size, device, merge, flow=dataset.flow,
                                                     temporal=True))
                        row["J0_temporal"], row["J_temporal"] = sequence_j(fused0, truths), sequence_j(fused, truths)
                        row["flicker0"], row["flicker"] = flicker(masks0, dataset), flicker(masks, dataset)
                        row["flicker0_temporal"] = flicker(fused0, dataset)
                        row["flicker_temporal"] = flicker(fused, dataset)
            for label, label_runs in runs.items():
                row[label] = summarise(label_runs, flow_s)
                records.extend({"sequence": video.name, "row": label, "J0": row["J0"], **run} for run in label_runs)
        rows.append(row)
        if args.records:  # rewritten after each video: a bench cut short keeps what it measured
            args.records.write_text(json.dumps(records, indent=1))
        print(f"{video.name}: J0 {100 * row['J0']:.1f}  " + "  ".join(
            f"{n} {100 * row[n]['J']:.1f} ({row[n]['decision']}, worst run {100 * row[n]['J_min']:.1f}, "
            f"IoU0 {100 * row[n]['agreement']:.0f}, "
            f"{row[n]['adapt_s']:.1f} s)" for n in labels),
            flush=True)

    source = f"H.264 crf 23, {'854x480' if args.upscale == 2 else f'{args.upscale}x of 427x240'}"
    print(f"\n{args.steps} adaptation steps per video on {source}, merge {merge}, {args.threads} threads, "
          f"J the mean of {args.seeds} seed(s), "
          f"{len(rows)} videos (mean {np.mean([r['frames'] for r in rows]):.0f} frames)")
    j0 = np.array([r["J0"] for r in rows])
    width = max(14, *(len(label) + 1 for label in labels))
    print(f"{'variant':<{width}}{'J':>7}{'gain':>7}{'worst':>7}{'worst run':>10}{'seed sd':>8}{'kept':>6}{'revert':>7}"
          f"{'flow s':>8}{'adapt s':>9}{'J/s':>7}{'IoU0':>6}")
    print(f"{'0 steps':<{width}}{100 * j0.mean():7.1f}")
    for name in labels:
        j = np.array([r[name]["J"] for r in rows])
        kept = sum(r[name]["kept"] for r in rows)
        flow_s = np.mean([r[name]["flow_s"] for r in rows if r[name]["flow_s"] > 0.05] or [0.0])
        adapt_s = np.mean([r[name]["adapt_s"] for r in rows])
        gain = 100 * (j - j0).mean()
        worst_run = 100 * min(r[name]["J_min"] - r["J0"] for r in rows)
        seed_sd = 100 * np.mean([r[name]["J_sd"] for r in rows])
        print(f"{name:<{width}}{100 * j.mean():7.1f}{gain:+7.1f}{100 * (j - j0).min():+7.1f}{worst_run:+10.1f}{seed_sd:8.1f}"
              f"{kept:6.1f}{len(rows) - kept:7.1f}"
              f"{flow_s:8.1f}{adapt_s:9.1f}{gain / (flow_s + adapt_s):7.2f}"
              f"{100 * np.mean([r[name]['agreement'] for r in rows]):6.1f}")
    print(f"\nper video, variant {detail} (J x100; flicker = 1 - temporal IoU, x100; temporal = fused along the flow)")
    print(f"{'sequence':<16}{'J0':>6}{'J':>6}{'kept':>9}{'loss0':>8}{'loss':>8}{'J0 tmp':>8}{'J tmp':>7}"
          f"{'flk0':>6}{'flk':>6}{'flk tmp':>8}{'seg s':>7}")
    for r in rows:
        d = r[detail]
        print(f"{r['sequence']:<16}{100 * r['J0']:6.1f}{100 * d['J']:6.1f}{d['decision']:>9}{d['before']:8.4f}"
              f"{d['after']:8.4f}{100 * r['J0_temporal']:8.1f}{100 * r['J_temporal']:7.1f}{100 * r['flicker0']:6.1f}"
              f"{100 * r['flicker']:6.1f}{100 * r['flicker_temporal']:8.1f}{r['segment_s']:7.1f}")
    means = {k: 100 * np.mean([r[k] for r in rows]) for k in ("J0", "J0_temporal", "J_temporal", "flicker0",
                                                              "flicker", "flicker_temporal")}
    print(f"{'MEAN':<16}{means['J0']:6.1f}{100 * np.mean([r[detail]['J'] for r in rows]):6.1f}{'':>25}"
          f"{means['J0_temporal']:8.1f}{means['J_temporal']:7.1f}{means['flicker0']:6.1f}{means['flicker']:6.1f}"
          f"{means['flicker_temporal']:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
