"""Images in their own aspect ratio or stretched to the network's 128×224: J on photos and on
portrait and 4:3 crops of unseen video.

    python bench/bench_aspect.py models/weights/gwm-default.onnx
    python bench/bench_aspect.py models/weights/gwm-default.pt --crops 135 --ecssd-limit 300

The paper feeds every frame at 128×224 (App. A); DAVIS is 16:9, so nothing is stretched there. What
users send often is not: 4:3 and 3:2 photos, portrait photos, and video filmed with the phone held
upright (9:16). Each input is fed both ways with the same network:

- ``stretch``: resized to the network's input size whatever its shape (the paper);
- ``keep``: resized to about as many pixels in its own aspect ratio, sides multiples of 16
  (models/preprocessing.py, ``network_input_size``; what a model whose spec keeps the aspect does).

Rows: ECSSD (1 000 photos: all, portrait, landscape, and each half, ``framed`` merge as ``/segment``
uses), then DAVIS val-dev frames cropped to a width (135 px = 9:16, 180 px = 3:4, 320 px = 4:3 of the
240 px high frames) around the object's mean position over the video (the crop follows the truth
only to keep the object in view; the score is J per video, official frames, ``border`` merge), one
network pass per frame as ``/segment`` does it. J of the network's soft mask at 0.5, no refinement.
Video jobs feed frames at the fixed size whatever their shape: with test-time adaptation the
stretched frames measured better (training/adapt.py, README Model card).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models.inference import predict
from models.merge_strategy import PHOTO_MERGE
from models.preprocessing import network_input_size
from training.evaluate import jaccard, read_annotation, read_mask
from training.export import load_network
from training.frames import DEFAULT_EVAL_DATA, DEFAULT_EVAL_SPLIT, list_sequences, read_rgb

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODES = {"stretch": False, "keep": True}


def soft_mask_j(network, image: np.ndarray, truth: np.ndarray, input_size: tuple[int, int], keep_aspect: bool,
                merge: str) -> float:
    """J of one image's merged soft foreground, fed ``keep_aspect`` or stretched, against its truth."""
    _, soft = predict(network, [image], network_input_size(image.shape[:2], input_size, keep_aspect), merge=merge)
    up = torch.nn.functional.interpolate(soft[None], size=truth.shape, mode="bilinear", align_corners=False)
    return jaccard(up[0, 0].numpy() > 0.5, truth)


def crop_around_object(frames: list[np.ndarray], truths: list[np.ndarray],
                       width: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames and truths cut to ``width`` columns of the frame around the object's mean column."""
    frame_width = frames[0].shape[1]
    scale = truths[0].shape[1] / frame_width  # annotations are 480p, frames 240p
    columns = np.concatenate([np.nonzero(t)[1] / scale for t in truths if t.any()] or [np.array([frame_width / 2])])
    left = int(np.clip(columns.mean() - width / 2, 0, frame_width - width))
    return ([f[:, left:left + width] for f in frames],
            [t[:, round(left * scale):round((left + width) * scale)] for t in truths])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="checkpoint (.pt) or exported model (.onnx) that takes any input size")
    parser.add_argument("--crops", type=int, nargs="+", default=[135, 180, 320],
                        help="crop widths of the 427×240 val-dev frames (default 135 180 320)")
    parser.add_argument("--ecssd-limit", type=int, help="score only the first N ECSSD photos")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    network, spec = load_network(args.model)
    if not spec.keep_aspect:
        raise SystemExit(f"{args.model} records a fixed input size (keep_aspect off): export it with --aspect keep")

    photos = sorted((SHARED / "ecssd" / "images").iterdir())[:args.ecssd_limit]
    photo_j = {mode: [] for mode in MODES}
    portrait = []
    for path in tqdm(photos, desc="ECSSD", unit="photo"):
        rgb, truth = read_rgb(path), read_mask(SHARED / "ecssd" / "masks" / f"{path.stem}.png")
        portrait.append(rgb.shape[0] > rgb.shape[1])
        for mode, keep in MODES.items():
            photo_j[mode].append(soft_mask_j(network, rgb, truth, spec.input_size, keep, PHOTO_MERGE))
    portrait_mask, half = np.asarray(portrait), len(photos) // 2
    rows = []
    for label, select in [(f"ECSSD, all {len(photos)}", slice(None)),
                          (f"ECSSD, portrait ({portrait_mask.sum()})", portrait_mask),
                          (f"ECSSD, landscape ({(~portrait_mask).sum()})", ~portrait_mask),
                          ("ECSSD, first half", slice(0, half)), ("ECSSD, second half", slice(half, None))]:
        rows.append((label, *(100 * np.asarray(photo_j[mode])[select].mean() for mode in MODES)))

    videos = list_sequences(DEFAULT_EVAL_DATA, splits=[DEFAULT_EVAL_SPLIT])
    for width in args.crops:
        video_j = {mode: [] for mode in MODES}
        for video in tqdm(videos, desc=f"val-dev, {width} px wide", unit="seq"):
            indices = range(1, len(video) - 1)  # the official DAVIS frames
            frames, truths = crop_around_object([video.read(i) for i in indices],
                                                [read_annotation(DEFAULT_EVAL_DATA, video, i) for i in indices], width)
            for mode, keep in MODES.items():
                video_j[mode].append(np.mean([soft_mask_j(network, f, t, spec.input_size, keep, spec.merge)
                                              for f, t in zip(frames, truths)]))
        height = videos[0].read(0).shape[0]
        fed = network_input_size((height, width), spec.input_size)
        rows.append((f"val-dev cropped {width}×{height} (fed {fed[0]}×{fed[1]})",
                     *(100 * np.mean(video_j[mode]) for mode in MODES)))

    print(f"\nmodel {Path(args.model).name} (version {spec.version}), input {spec.input_size[0]}×{spec.input_size[1]}, "
          f"{args.threads} thread(s)\n| input | J stretched | J own aspect | gain |\n| --- | --- | --- | --- |")
    for label, stretched, kept in rows:
        print(f"| {label} | {stretched:.1f} | {kept:.1f} | {kept - stretched:+.1f} |")


if __name__ == "__main__":
    main()
