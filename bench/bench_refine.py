"""Edge-aware refinement (models/refinement.py): what it adds in J and what it costs per image.

    python bench/bench_refine.py models/weights/gwm-default.onnx
    python bench/bench_refine.py runs/long/last.pt --ecssd-limit 300

Scores the model on DAVIS val-dev (J, label-free merge) and ECSSD (J, max F-β) with and without the
guided-filter refinement, and times the filter alone on 854×480 frames (the DAVIS 480p size).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from models.refinement import refine_soft_mask
from training.evaluate import evaluate_davis, evaluate_images
from training.export import load_network
from training.frames import DEFAULT_EVAL_DATA, list_sequences

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def filter_milliseconds(repeats: int = 20) -> float:
    """Median time of one guided filter on an 854×480 DAVIS frame upscaled from 240p."""
    import cv2

    frame = list_sequences(DEFAULT_EVAL_DATA, "240p", ["val-dev"])[0].read(0)
    image = cv2.resize(frame, (854, 480), interpolation=cv2.INTER_CUBIC)
    soft = np.random.default_rng(0).random((480, 854), dtype=np.float32)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        refine_soft_mask(image, soft)
        timings.append(time.perf_counter() - start)
    return 1000 * float(np.median(timings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="checkpoint (.pt) or exported model (.onnx)")
    parser.add_argument("--ecssd-limit", type=int, help="score only the first N ECSSD images")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, spec = load_network(args.model)
    size, merge = spec.input_size, spec.merge
    print("| refinement | val-dev J | ECSSD J | ECSSD max F-β |\n|---|---|---|---|")
    for refine in (False, True):
        davis = evaluate_davis(model, DEFAULT_EVAL_DATA, size, progress=False, merge=merge, refine=refine)
        ecssd = evaluate_images(model, SHARED / "ecssd" / "images", SHARED / "ecssd" / "masks", size,
                                limit=args.ecssd_limit, progress=False, refine=refine, keep_aspect=spec.keep_aspect)
        print(f"| {'guided filter' if refine else 'none'} | {100 * davis['overall']['merged']['J_mean']:.1f} | "
              f"{100 * ecssd['J']:.1f} | {100 * ecssd['max_F_beta']:.1f} |", flush=True)
    print(f"\nguided filter on one 854×480 frame: {filter_milliseconds():.1f} ms (median, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
