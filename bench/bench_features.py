"""Does a frozen encoder's output carry objectness? A probe before training a segmenter on it.

    python bench/bench_features.py --raft-weights ../shared/weights/raft-small.pth
    python bench/bench_features.py --raft-weights ../shared/weights/raft-small.pth --frames-per-video 3

A pretrained backbone is the paper's lever for generalisation (Table 5), and no pretrained image
encoder can be downloaded here; the one pretrained network at hand is RAFT-small (trained on
synthetic flow, no human labels). Training a segmenter on it costs hours, so this script first asks
whether its features separate objects at all. For every probed encoder, on frames of the DAVIS val-dev
videos (never trained on), the features are resized to a 60×106 grid and scored two ways against the
annotation (used for scoring only):

- **k-means (K = 4) + oracle**: cluster each frame's standardised features into 4 groups, take the best
  union of groups by the truth: how well the features group pixels into objects without any training;
- **linear probe**: a logistic regression from features to foreground, fitted on half the videos and
  scored on the other half (both folds): how much foreground information is linearly there.

Encoders: RAFT-small's context and feature encoders (stage 2, stage 3 and output), the same
architecture with random weights (the control: random convolutions already see colour and texture),
Lab colour + position, and the shipped U-Net's merge features and region logits (trained for the task:
the reference). J in %, frames 2 … n−2 sampled evenly.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.preprocessing import prepare_image
from training.checkpoint import load_model
from training.evaluate import jaccard, read_annotation
from training.frames import DEFAULT_EVAL_DATA, DEFAULT_EVAL_SPLIT, list_sequences, read_rgb
from training.raft import load_raft

ROOT = Path(__file__).resolve().parents[1]
GRID = (60, 106)
Encoder = Callable[[np.ndarray], dict[str, torch.Tensor]]


def _raft_stages(encoder: torch.nn.Module, rgb: np.ndarray) -> dict[str, torch.Tensor]:
    """Stage 2 (1/4), stage 3 (1/8) and output (1/8) of a torchvision RAFT encoder, on the frame at
    240×424 in RAFT's [-1, 1] range."""
    frame = torch.tensor(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1
    frame = F.interpolate(frame, size=(240, 424), mode="bilinear", align_corners=False)
    stem = encoder.convnormrelu(frame)
    stage2 = encoder.layer2(encoder.layer1(stem))
    stage3 = encoder.layer3(stage2)
    return {"stage 2": stage2, "stage 3": stage3, "output": encoder.conv(stage3)}


def _colour_position(rgb: np.ndarray) -> dict[str, torch.Tensor]:
    import cv2

    lab = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB), GRID[::-1], interpolation=cv2.INTER_AREA)
    lab = torch.from_numpy(lab).permute(2, 0, 1).float() / 255
    ys, xs = torch.meshgrid(torch.linspace(0, 1, GRID[0]), torch.linspace(0, 1, GRID[1]), indexing="ij")
    return {"": torch.cat([lab, ys[None], xs[None]])[None]}


def _unet(checkpoint: Path) -> Encoder:
    model, spec = load_model(checkpoint)
    model = model.float().eval()

    def encode(rgb: np.ndarray) -> dict[str, torch.Tensor]:
        out = model.forward_with_features(torch.from_numpy(prepare_image(rgb, spec.input_size))[None])
        return {"merge features": out.features, "region logits": out.logits}

    return encode


def encoders(raft_weights: Path, checkpoint: Path) -> dict[str, Encoder]:
    from torchvision.models.optical_flow import raft_small

    raft = load_raft(raft_weights).eval()
    torch.manual_seed(0)
    random = raft_small().eval()
    return {
        "RAFT-small context": lambda rgb: _raft_stages(raft.context_encoder, rgb),
        "RAFT-small feature": lambda rgb: _raft_stages(raft.feature_encoder, rgb),
        "random RAFT-small context (control)": lambda rgb: _raft_stages(random.context_encoder, rgb),
        "Lab colour + position": _colour_position,
        f"U-Net {checkpoint.name} (reference)": _unet(checkpoint),
    }


def frames(data: Path, per_video: int) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(video, RGB frame, foreground on GRID) for ``per_video`` frames of each val-dev video."""
    import cv2

    for video in list_sequences(data, splits=[DEFAULT_EVAL_SPLIT]):
        picks = np.linspace(2, len(video) - 2, per_video).round().astype(int)
        for index in picks:
            truth = read_annotation(data, video, int(index)).astype(np.uint8)
            yield video.name, read_rgb(video.frames[index]), cv2.resize(truth, GRID[::-1], interpolation=cv2.INTER_AREA) > 0


def _kmeans(points: np.ndarray, k: int = 4, iterations: int = 20) -> np.ndarray:
    centres = points[np.random.default_rng(0).choice(len(points), k, replace=False)]
    for _ in range(iterations):
        labels = ((points[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        centres = np.stack([points[labels == j].mean(0) if (labels == j).any() else centres[j] for j in range(k)])
    return labels


def kmeans_oracle_j(features: np.ndarray, truth: np.ndarray, k: int = 4) -> float:
    """J of the best union of k-means groups of one frame's (N, C) features."""
    labels = _kmeans((features - features.mean(0)) / (features.std(0) + 1e-6), k)
    subsets = itertools.chain.from_iterable(itertools.combinations(range(k), r) for r in range(1, k))
    return max(jaccard(np.isin(labels, subset), truth, empty_score=0.0) for subset in subsets)


def _fit_logistic(inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of a class-balanced, lightly L2-regularised logistic regression (L-BFGS)."""
    weight = torch.zeros(inputs.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    balance = (1 - targets.mean()) / targets.mean().clamp_min(1e-6)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=100)

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        value = F.binary_cross_entropy_with_logits(inputs @ weight + bias, targets, pos_weight=balance)
        value = value + 1e-3 * weight.pow(2).sum()
        value.backward()
        return value

    optimiser.step(loss)
    return weight.detach(), bias.detach()


def linear_probe_j(samples: list[tuple[str, np.ndarray, np.ndarray]]) -> float:
    """Mean J over frames of a logistic regression fitted on the other half of the videos."""
    videos = sorted({video for video, _, _ in samples})
    first_half = set(videos[::2])
    scores = []
    for fold in (True, False):
        train = [(x, y) for video, x, y in samples if (video in first_half) == fold]
        x = np.concatenate([f for f, _ in train])
        y = torch.from_numpy(np.concatenate([t for _, t in train]).astype(np.float32))
        mean, std = x.mean(0), x.std(0) + 1e-6
        weight, bias = _fit_logistic(torch.from_numpy((x - mean) / std).float(), y)
        for video, features, truth in samples:
            if (video in first_half) != fold:
                logits = torch.from_numpy((features - mean) / std).float() @ weight + bias
                scores.append(jaccard(logits.numpy() > 0, truth, empty_score=0.0))
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raft-weights", type=Path, required=True, help="RAFT-small weights file")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "models" / "weights" / "gwm-default.pt",
                        help="the U-Net scored as the reference (default: the shipped model)")
    parser.add_argument("--data", type=Path, default=ROOT / DEFAULT_EVAL_DATA, help="annotated DAVIS root")
    parser.add_argument("--frames-per-video", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    probed = encoders(args.raft_weights, args.checkpoint)
    samples: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    with torch.no_grad():
        for video, rgb, truth in tqdm(list(frames(args.data, args.frames_per_video)), desc="features", unit="frame"):
            for encoder_name, encode in probed.items():
                for output, value in encode(rgb).items():
                    grid = F.interpolate(value.float(), size=GRID, mode="bilinear", align_corners=False)[0]
                    name = f"{encoder_name}, {output}" if output else encoder_name
                    samples.setdefault(name, []).append((video, grid.flatten(1).T.numpy(), truth.reshape(-1)))

    print(f"\n{len(next(iter(samples.values())))} val-dev frames, features on a {GRID[0]}×{GRID[1]} grid\n")
    print("| features | channels | k-means (4) + oracle J | linear probe J (held-out videos) |")
    print("| --- | --- | --- | --- |")
    for name, rows in samples.items():
        kmeans = np.mean([kmeans_oracle_j(x, y) for _, x, y in rows])
        print(f"| {name} | {rows[0][1].shape[1]} | {100 * kmeans:.1f} | {100 * linear_probe_j(rows):.1f} |")


if __name__ == "__main__":
    main()
