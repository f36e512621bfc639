"""Evaluation: DAVIS-2016 J (mean, recall, decay) for videos; accuracy, J and max F-β for images.

Predictions are made at the network's input size, the *soft* foreground is up-sampled to the
annotation's resolution and thresholded at 0.5 (reference notes), and IoU is computed there.

Two DAVIS frame protocols are offered, because they give different numbers:
- ``davis`` (default): the official DAVIS-2016 evaluator — first and last frames excluded, an empty
  prediction on an empty annotation scores 1.
- ``gwm-reference``: the authors' code — frames 0, 1 and the last excluded, empty-on-empty scores 0.

Every video number is reported for the label-free merge (what the service does) and for the oracle
merge (best subset of regions per frame, chosen with the annotation) as the paper's Table 2 does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from models.inference import predict
from models.merge_strategy import PAPER_MERGE, PHOTO_MERGE
from models.merging import oracle_merge
from models.preprocessing import indices_by_size, network_input_size
from models.refinement import foreground_mask, refine_soft_mask
from models.segmenters import Segmenter

from .frames import DEFAULT_EVAL_SPLIT, DEFAULT_RESOLUTION, VideoFolder, list_sequences, read_rgb

__all__ = [
    "PROTOCOLS",
    "davis_sequence_scores",
    "evaluate_davis",
    "evaluate_images",
    "evaluate_sequence",
    "f_beta_curve",
    "format_table",
    "jaccard",
    "read_annotation",
    "read_mask",
]

PROTOCOLS = ("davis", "gwm-reference")


def jaccard(prediction: np.ndarray, truth: np.ndarray, empty_score: float = 1.0) -> float:
    """IoU of two boolean masks; ``empty_score`` when both are empty."""
    union = np.logical_or(prediction, truth).sum()
    if union == 0:
        return empty_score
    return float(np.logical_and(prediction, truth).sum() / union)


def davis_sequence_scores(ious: Sequence[float]) -> dict[str, float]:
    """J mean, recall (fraction of frames with IoU > 0.5) and decay (first quarter − last quarter,
    with the official DAVIS evaluator's overlapping bins, which stay non-empty for short sequences)."""
    values = np.asarray(ious, dtype=np.float64)
    edges = np.round(np.linspace(1, len(values), 5) + 1e-10).astype(int) - 1
    quarters = [values[edges[i]:edges[i + 1] + 1] for i in range(4)]
    return {
        "J_mean": float(values.mean()),
        "J_recall": float((values > 0.5).mean()),
        "J_decay": float(quarters[0].mean() - quarters[-1].mean()),
    }


def f_beta_curve(
    soft: Iterable[np.ndarray], truth: Iterable[np.ndarray], beta2: float = 0.3, bins: int = 255
) -> np.ndarray:
    """F-β at ``bins`` thresholds, precision and recall averaged over images first (the saliency
    convention). Histograms of the soft values of positive and negative pixels give every threshold's
    counts at once, instead of one pass per threshold."""
    precision_sum = np.zeros(bins)
    recall_sum = np.zeros(bins)
    count = 0
    for probability, mask in zip(soft, truth):
        levels = np.clip((probability.reshape(-1) * bins).astype(np.int64), 0, bins - 1)
        positives = mask.reshape(-1).astype(bool)
        # counts of pixels predicted positive at threshold t = pixels with level >= t
        true_positive = np.cumsum(np.bincount(levels[positives], minlength=bins)[::-1])[::-1]
        predicted = np.cumsum(np.bincount(levels, minlength=bins)[::-1])[::-1]
        precision_sum += true_positive / np.maximum(predicted, 1)
        recall_sum += true_positive / max(int(positives.sum()), 1)
        count += 1
    precision, recall = precision_sum / count, recall_sum / count
    return (1 + beta2) * precision * recall / np.maximum(beta2 * precision + recall, 1e-12)


def read_mask(path: Path) -> np.ndarray:
    """A ground-truth mask file (DAVIS-2016 annotation or saliency PNG, both 0/255 greyscale) as a
    boolean array: above half is object."""
    return read_rgb(path)[..., 0] > 127


def read_annotation(data_root: str | Path, video: VideoFolder, index: int) -> np.ndarray:
    """The 480p ground-truth mask (bool, H×W) of frame ``index`` of a DAVIS-style sequence."""
    return read_mask(Path(data_root) / "Annotations" / "480p" / video.name / f"{video.frames[index].stem}.png")


def evaluate_sequence(
    model: Segmenter,
    video: VideoFolder,
    data_root: str | Path,
    input_size: Sequence[int],
    protocol: str = "davis",
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    merge: str = PAPER_MERGE,
    refine: bool = False,
) -> dict[str, dict[str, float]]:
    """J mean/recall/decay of one DAVIS-style sequence, for the merged and the oracle masks.

    ``merge`` is the label-free strategy behind the merged masks (pass the model's own); ``refine``
    snaps them to the frame's edges (models/refinement.py) before they are scaled to the annotation.
    Frames are fed at ``input_size`` whatever their shape, as video jobs feed them (training/adapt.py)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")
    first, empty_score = (1, 1.0) if protocol == "davis" else (2, 0.0)
    model.eval()
    frames = range(first, len(video) - 1)
    ious: dict[str, list[float]] = {"merged": [], "oracle": []}
    for start in range(0, len(frames), batch_size):
        chunk = frames[start:start + batch_size]
        images = [video.read(i) for i in chunk]
        probabilities, merged = predict(model, images, input_size, device, merge)
        truths = [read_annotation(data_root, video, i) for i in chunk]
        size = truths[0].shape
        up = torch.nn.functional.interpolate(probabilities, size=size, mode="bilinear", align_corners=False)
        truth_tensor = torch.from_numpy(np.stack(truths))
        oracle = oracle_merge(up, truth_tensor) > 0.5
        for j, truth in enumerate(truths):
            merged_mask = foreground_mask(merged[j], size, guide=images[j] if refine else None)
            ious["merged"].append(jaccard(merged_mask, truth, empty_score))
            ious["oracle"].append(jaccard(oracle[j].numpy(), truth, empty_score))
    return {kind: davis_sequence_scores(values) for kind, values in ious.items()}


def evaluate_davis(
    model: Segmenter,
    data_root: str | Path,
    input_size: Sequence[int],
    split: str = DEFAULT_EVAL_SPLIT,
    resolution: str = DEFAULT_RESOLUTION,
    protocol: str = "davis",
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    progress: bool = True,
    merge: str = PAPER_MERGE,
    refine: bool = False,
) -> dict[str, Any]:
    """:func:`evaluate_sequence` on every sequence of a split, and the mean over sequences."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")
    sequences = {
        video.name: evaluate_sequence(model, video, data_root, input_size, protocol, device, batch_size, merge,
                                      refine)
        for video in tqdm(list_sequences(data_root, resolution, [split]), desc="evaluating", unit="seq",
                          disable=not progress)
    }
    overall = {
        kind: {metric: float(np.mean([s[kind][metric] for s in sequences.values()]))
               for metric in ("J_mean", "J_recall", "J_decay")}
        for kind in ("merged", "oracle")
    }
    return {"protocol": protocol, "split": split, "merge": merge, "refine": refine, "sequences": sequences,
            "overall": overall}


def evaluate_images(
    model: Segmenter,
    image_dir: str | Path,
    mask_dir: str | Path,
    input_size: Sequence[int],
    device: torch.device | str = "cpu",
    limit: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
    merge: str = PHOTO_MERGE,  # what /segment uses for photos
    refine: bool = False,
    keep_aspect: bool = False,
) -> dict[str, Any]:
    """Pixel accuracy, mean J and max F-β (β² = 0.3) over a folder of images with 0/255 masks.

    With ``refine`` the soft masks are guided-filtered by their images (models/refinement.py) before
    thresholding (and before the F-β curve); with ``keep_aspect`` each image is fed in its own aspect
    ratio (:func:`~models.preprocessing.network_input_size`)."""
    model.eval()
    images = sorted(p for p in Path(image_dir).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:limit]
    if not images:
        raise FileNotFoundError(f"no images in {image_dir}")
    accuracy, ious, soft_masks, truths = [], [], [], []
    for start in tqdm(range(0, len(images), batch_size), desc="evaluating images", unit="batch", disable=not progress):
        chunk = images[start:start + batch_size]
        rgbs = [read_rgb(p) for p in chunk]
        merged = _foreground_at_own_sizes(model, rgbs, input_size, keep_aspect, device, merge)
        for path, rgb, soft in zip(chunk, rgbs, merged):
            truth = read_mask(Path(mask_dir) / f"{path.stem}.png")
            up = torch.nn.functional.interpolate(soft[None, None], size=truth.shape, mode="bilinear",
                                                 align_corners=False)[0, 0].numpy()
            if refine:
                guide = rgb if rgb.shape[:2] == truth.shape else cv2.resize(rgb, truth.shape[::-1])
                up = refine_soft_mask(guide, up)
            mask = up > 0.5
            accuracy.append(float((mask == truth).mean()))
            ious.append(jaccard(mask, truth))
            soft_masks.append(up)
            truths.append(truth)
    f_beta = f_beta_curve(soft_masks, truths)
    return {
        "images": len(images),
        "merge": merge,
        "refine": refine,
        "pixel_accuracy": float(np.mean(accuracy)),
        "J": float(np.mean(ious)),
        "max_F_beta": float(f_beta.max()),
    }


def _foreground_at_own_sizes(model: Segmenter, images: Sequence[np.ndarray], input_size: Sequence[int],
                             keep_aspect: bool, device: torch.device | str, merge: str) -> list[torch.Tensor]:
    """Each image's soft foreground at its network input size: one network run per size among them."""
    sizes = [network_input_size(image.shape[:2], input_size, keep_aspect) for image in images]
    merged: list[torch.Tensor] = [torch.empty(0)] * len(images)
    for size, indices in indices_by_size(sizes).items():
        _, soft = predict(model, [images[i] for i in indices], size, device, merge)
        for i, one in zip(indices, soft):
            merged[i] = one
    return merged


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of a DAVIS report (per sequence, then the mean)."""
    rows = [f"{'sequence':<20} {'J merged':>9} {'J oracle':>9} {'recall':>7} {'decay':>7}"]
    entries = list(report["sequences"].items()) + [("MEAN", report["overall"])]
    for name, scores in entries:
        merged, oracle = scores["merged"], scores["oracle"]
        rows.append(f"{name:<20} {100 * merged['J_mean']:9.1f} {100 * oracle['J_mean']:9.1f} "
                    f"{100 * merged['J_recall']:7.1f} {100 * merged['J_decay']:7.1f}")
    return "\n".join(rows)
