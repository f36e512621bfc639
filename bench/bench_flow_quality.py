"""How much does each optical-flow method tell GWM about the object? Ground-truth diagnostics on val-dev.

The GWM loss can only find what the flow shows. For sampled DAVIS val-dev frames this script computes,
per flow method (all four paper gaps, stored grid 128×224, flow in reference units clipped and
motion model as in the default ``TrainConfig``):

- **background-fit J** — the motion model fitted to the *true* background, its residual summed over
  the gaps, thresholded at the per-frame best quantile: how well the flow alone separates the object
  once the background motion is known. A ceiling-like figure for a segmenter trained on this flow.
- **GT mean loss** — the GWM loss of the true two-region segmentation (lower: the flow is closer to
  piecewise-parametric on the true regions).
- with ``--checkpoint``: **GT wins** — the share of frames where the true segmentation has a lower
  loss than the model's own regions, merged into two by the oracle and thresholded like the truth.
  Below 50 % the loss prefers the model's (wrong) regions to the truth, so more training on this
  flow cannot move the model to it.

    python bench/bench_flow_quality.py --checkpoint models/weights/gwm-default.pt
    python bench/bench_flow_quality.py --methods dis dis-fine --frames-per-sequence 8
    python bench/bench_flow_quality.py --methods dis-fine --raft-weights ../shared/weights/raft-small.pth \
        --raft-variants 1x6 1x12 1.5x8 2x8

A RAFT variant ``SxI`` runs RAFT on frames scaled by S with I refinement iterations.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.inference import predict
from models.merging import oracle_merge
from models.motion import coordinate_basis, fit_motion, motion_loss, motion_residuals
from models.preprocessing import DEFAULT_INPUT_SIZE, resize_flow
from training.checkpoint import load_model
from training.data import to_reference_units
from training.evaluate import jaccard, read_annotation
from training.flow import WEIGHTLESS_FLOW_METHODS, FlowEstimator, build_flow_estimator
from training.flow_cache import PAPER_GAPS
from training.frames import DEFAULT_EVAL_DATA, DEFAULT_EVAL_SPLIT, DEFAULT_RESOLUTION, list_sequences
from training.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
GRID = DEFAULT_INPUT_SIZE
QUANTILES = torch.linspace(0.5, 0.99, 25)


def background_fit_jaccard(flows: torch.Tensor, truth: torch.Tensor, basis: torch.Tensor) -> float:
    """Best-threshold J of the residual of the motion model fitted on the true background.

    ``flows``: (G, 2, h, w) one flow per gap; ``truth``: (h, w) bool."""
    g, _, h, w = flows.shape
    background = (~truth).float().reshape(1, 1, -1).expand(g, 1, -1).contiguous()
    flat = flows.reshape(g, 2, -1).transpose(1, 2)
    residual = motion_residuals(flat, basis, fit_motion(background, flat, basis))[:, 0].sum(0)
    thresholds = torch.quantile(residual, QUANTILES)
    return max(jaccard((residual > t).reshape(h, w).numpy(), truth.numpy()) for t in thresholds)


def two_regions(foreground: torch.Tensor, copies: int) -> torch.Tensor:
    """(h, w) foreground probability -> (copies, 2, h, w) region masks."""
    return torch.stack([foreground, 1 - foreground])[None].expand(copies, -1, -1, -1)


def sampled_frames(videos, frames_per_sequence: int, data_root: Path, model) -> list[dict]:
    """Each sampled frame once: its image, the neighbours of every gap, the truth on the grid and,
    with a model, the model's regions merged by the oracle (the same for every flow method)."""
    samples = []
    for video in videos:
        for i in np.linspace(2, len(video) - 3, frames_per_sequence).astype(int):
            image = video.read(i)
            mask = torch.from_numpy(read_annotation(data_root, video, i))[None, None].float()
            truth = F.interpolate(mask, size=GRID, mode="area")[0, 0] > 0.5
            sample = {"image": image, "neighbours": [video.read(i + gap) for gap in PAPER_GAPS], "truth": truth}
            if model is not None:
                with torch.no_grad():
                    probabilities, _ = predict(model, [image], GRID)
                sample["model"] = (oracle_merge(probabilities, truth[None])[0] > 0.5).float()  # hard, like the truth
            samples.append(sample)
    return samples


def raft_variant(text: str) -> tuple[float, int]:
    """``2x8`` -> (scale 2.0, 8 iterations)."""
    scale, iterations = text.lower().split("x")
    return float(scale), int(iterations)


def estimators(args: argparse.Namespace) -> list[tuple[str, FlowEstimator]]:
    """Every method asked for, by the name it gets in the table."""
    built = [(method, build_flow_estimator(method)) for method in args.methods]
    for scale, iterations in args.raft_variants:
        built.append((f"raft {scale:g}x, {iterations} it",
                      build_flow_estimator("raft", weights=args.raft_weights, scale=scale, iterations=iterations)))
    return built


def main() -> None:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["dis", "dis-fine", "farneback"],
                        choices=WEIGHTLESS_FLOW_METHODS)
    parser.add_argument("--data", default=str((ROOT / DEFAULT_EVAL_DATA).resolve()))
    parser.add_argument("--frames-per-sequence", type=int, default=4)
    parser.add_argument("--checkpoint", help="also compare the truth's loss with this model's regions")
    parser.add_argument("--raft-weights", help="local RAFT weights file, for --raft-variants")
    parser.add_argument("--raft-variants", nargs="*", type=raft_variant, default=[],
                        help="RAFT settings SCALExITERATIONS, e.g. 1x12 2x8 (needs --raft-weights)")
    args = parser.parse_args()
    if args.raft_variants and not args.raft_weights:
        parser.error("--raft-variants needs --raft-weights")
    basis = coordinate_basis(*GRID, defaults.motion_model)
    model = load_model(args.checkpoint)[0] if args.checkpoint else None
    videos = list_sequences(args.data, DEFAULT_RESOLUTION, [DEFAULT_EVAL_SPLIT])
    samples = sampled_frames(videos, args.frames_per_sequence, Path(args.data), model)

    def loss(foreground: torch.Tensor, flows: torch.Tensor) -> float:
        return float(motion_loss(two_regions(foreground, len(flows)), flows, defaults.motion_model, basis=basis))

    print(f"{len(videos)} val-dev sequences × {args.frames_per_sequence} frames, gaps {PAPER_GAPS}, grid {GRID}")
    header = f"| method | background-fit J | GT mean loss | {'GT wins | ' if model else ''}ms / pair |"
    print(header + "\n" + "|---" * (header.count("|") - 1) + "|")
    for method, estimator in estimators(args):
        seconds, fit_j, gt_loss, gt_wins = 0.0, [], [], []
        for sample in samples:
            start = time.perf_counter()
            fields = [estimator(sample["image"], neighbour) for neighbour in sample["neighbours"]]
            seconds += time.perf_counter() - start
            on_grid = torch.stack([torch.from_numpy(resize_flow(f, GRID)).permute(2, 0, 1) for f in fields])
            flows = to_reference_units(on_grid, defaults.flow_clip)
            fit_j.append(background_fit_jaccard(flows, sample["truth"], basis))
            gt_loss.append(loss(sample["truth"].float(), flows))
            if model is not None:
                gt_wins.append(gt_loss[-1] < loss(sample["model"], flows))
        wins = f" {100 * np.mean(gt_wins):.0f} % |" if model else ""
        ms_per_pair = 1000 * seconds / (len(samples) * len(PAPER_GAPS))
        print(f"| {method} | {100 * np.mean(fit_j):.1f} | {np.mean(gt_loss):.2f} |{wins} {ms_per_pair:.1f} |", flush=True)


if __name__ == "__main__":
    main()
