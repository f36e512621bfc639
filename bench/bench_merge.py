"""Label-free merges against the oracle: how much of the regions' quality the foreground choice keeps.

    python bench/bench_merge.py models/weights/gwm-default.onnx
    python bench/bench_merge.py runs/long/last.pt --ecssd-limit 300

ECSSD is also scored on its two halves (images 1–500, 501–1000): a rule fitted to one half
should hold on the other.

For every image of DAVIS val-dev (frames 1 … n−2, J per video then averaged) and ECSSD, every
non-empty subset of the K regions is a candidate foreground, and each rule below picks one; the
table prints the J of each rule's pick (on the network's grid, the truth area-resized to it, so the
figures sit near, not on, ``gwm eval``'s), with the oracle (best subset by the truth) as the ceiling.

Rules (none sees the truth):
- ``border``: the ``border`` strategy (models/merging.py, what video frames use), fallback included;
- ``framed``: the ``framed`` strategy (what ``/segment`` uses for photos), fallback included;
- ``spectral``: the paper's Eq. 6 on the network's own features, with the authors' border rule;
- ``colour contrast``: the candidate whose colour histogram (4×4×4 RGB bins, soft-weighted) differs
  most from the rest of the image (χ²), a classical saliency cue;
- ``contrast / border ratio``: χ² divided by the border rule's ratio, both cues at once.
The last two are candidates measured here, not strategies the service offers.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from models.merging import border_strips, foreground_probability, is_degenerate, region_subsets
from models.preprocessing import prepare_image
from training.evaluate import read_annotation, read_mask
from training.export import load_network
from training.frames import DEFAULT_EVAL_DATA, DEFAULT_EVAL_SPLIT, list_sequences, read_rgb

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RULES = ("oracle", "border", "framed", "spectral", "colour contrast", "contrast / border ratio")
MIN_AREA = 0.02


def _iou(masks: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    intersection = (masks & truth).flatten(-2).sum(-1).double()
    union = (masks | truth).flatten(-2).sum(-1).double()
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.ones_like(union))


def _colour_contrast(probabilities: torch.Tensor, subsets: torch.Tensor, rgb: np.ndarray) -> torch.Tensor:
    """χ² distance (N, S) between each candidate's soft colour histogram and the rest of the image's."""
    quantised = torch.from_numpy(rgb.astype(np.int64) // 64)
    bins = (quantised[..., 0] * 16 + quantised[..., 1] * 4 + quantised[..., 2]).flatten(1)
    one_hot = torch.nn.functional.one_hot(bins, 64).float()
    region_histograms = torch.einsum("nkp,npb->nkb", probabilities.flatten(2), one_hot)
    inside = torch.einsum("sk,nkb->nsb", subsets, region_histograms)
    outside = region_histograms.sum(1, keepdim=True) - inside
    inside = inside / inside.sum(-1, keepdim=True).clamp_min(1e-6)
    outside = outside / outside.sum(-1, keepdim=True).clamp_min(1e-6)
    return 0.5 * ((inside - outside) ** 2 / (inside + outside).clamp_min(1e-9)).sum(-1)


def rule_scores(network, images: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                input_size: tuple[int, int]) -> dict[str, np.ndarray]:
    """J of each rule's pick for a batch of images (RGB) and their boolean truths."""
    height, width = input_size
    batch = torch.from_numpy(np.stack([prepare_image(image, input_size) for image in images]))
    with torch.inference_mode():
        logits, features = network.forward_with_features(batch)
    logits, features = torch.as_tensor(logits).float(), torch.as_tensor(features).float()
    probabilities = logits.softmax(1)
    truth = torch.from_numpy(np.stack([cv2.resize(t.astype(np.float32), (width, height),
                                                  interpolation=cv2.INTER_AREA) > 0.5 for t in truths]))
    subsets = region_subsets(probabilities.shape[1], probabilities, include_all=True)
    candidates = torch.einsum("sk,nkhw->nshw", subsets, probabilities)
    candidate_iou = _iou(candidates > 0.5, truth[:, None])
    area = candidates.mean((-2, -1))
    ratio = border_strips(candidates).mean(-1) / area.clamp_min(1e-9)
    eligible = (area >= MIN_AREA) & ~is_degenerate(candidates)
    contrast = _colour_contrast(probabilities, subsets, np.stack(
        [cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA) for image in images]))

    def pick(score: torch.Tensor) -> np.ndarray:
        score = torch.where(eligible, score, torch.full_like(score, -float("inf")))
        return candidate_iou[torch.arange(len(score)), score.argmax(1)].numpy()

    out = {"oracle": candidate_iou.max(1).values.numpy(),
           "colour contrast": pick(contrast),
           "contrast / border ratio": pick(contrast / ratio.clamp_min(1e-3))}
    for strategy in ("border", "framed", "spectral"):
        merged = foreground_probability(logits, features, strategy) > 0.5
        out[strategy] = _iou(merged, truth).numpy()
    return out


def _batches(items: Sequence, size: int = 16) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="checkpoint (.pt) or exported .onnx")
    parser.add_argument("--davis", default=DEFAULT_EVAL_DATA)
    parser.add_argument("--ecssd", default=str(SHARED / "ecssd"))
    parser.add_argument("--ecssd-limit", type=int)
    args = parser.parse_args()
    network, spec = load_network(args.model)
    per_video: dict[str, list[float]] = defaultdict(list)
    for video in tqdm(list_sequences(args.davis, splits=[DEFAULT_EVAL_SPLIT]), desc="val-dev", unit="seq"):
        scores = defaultdict(list)
        for chunk in _batches(range(1, len(video) - 1)):
            batch = rule_scores(network, [video.read(i) for i in chunk],
                                [read_annotation(args.davis, video, i) for i in chunk], spec.input_size)
            for rule, values in batch.items():
                scores[rule].extend(values)
        for rule in RULES:
            per_video[rule].append(float(np.mean(scores[rule])))
    photos = sorted((Path(args.ecssd) / "images").iterdir())[:args.ecssd_limit]
    per_photo: dict[str, list[float]] = defaultdict(list)
    for photo in tqdm(photos, desc="ECSSD", unit="photo"):  # one at a time: each at its own input size
        rgb = read_rgb(photo)
        batch = rule_scores(network, [rgb], [read_mask(Path(args.ecssd) / "masks" / f"{photo.stem}.png")],
                            spec.input_size_for(rgb.shape[:2]))
        for rule, values in batch.items():
            per_photo[rule].extend(values)
    half = len(photos) // 2
    print(f"\n| rule | val-dev J | ECSSD J | ECSSD J, first / second half |  (model {Path(args.model).name}, "
          f"{len(photos)} photos)\n| --- | --- | --- | --- |")
    for rule in RULES:
        photo = np.asarray(per_photo[rule])
        print(f"| {rule} | {100 * np.mean(per_video[rule]):.1f} | {100 * photo.mean():.1f} | "
              f"{100 * photo[:half].mean():.1f} / {100 * photo[half:].mean():.1f} |")


if __name__ == "__main__":
    main()
