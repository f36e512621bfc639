"""One network fed at several input sizes: zero-shot J on unseen video and photos, and the cost.

    python bench/bench_input_size.py models/weights/gwm-default.onnx
    python bench/bench_input_size.py models/weights/gwm-default.pt --sizes 112x192 128x224 --ecssd-limit 300
    python bench/bench_input_size.py models/weights/gwm-default.onnx --flops-from models/weights/gwm-default.pt \
        --sizes 112x192 128x224 --cost-only

A fully convolutional network takes any input size, and the size it was trained at need not be the one
it segments best at: the size sets how large objects are against the network's receptive field and its
four 2× poolings. Every row runs what ``gwm eval`` runs (DAVIS val-dev, the official frames and the
model's own merge; ECSSD with the ``framed`` merge, each photo in its own aspect ratio at the row's pixel
count when the model keeps the aspect), only the input size changes; a model exported with
``gwm export --input-size`` is then what the chosen row measured. GFLOPs: one forward pass at the row's
size (PyTorch FLOP counter; for an ``.onnx`` model, pass its training checkpoint with ``--flops-from``);
latency: the median of 20 forward passes of one image at the row's size, interleaved over the rows so
that a machine shared with other work slows each alike (onnxruntime for an ``.onnx`` model, the served
path; PyTorch for a checkpoint).
Both sets are unseen by the shipped model, and a size should be chosen only where both agree.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.spec import ModelSpec
from training.checkpoint import load_model
from training.cli import parse_size
from training.evaluate import evaluate_davis, evaluate_images
from training.export import load_network
from training.frames import DEFAULT_EVAL_DATA
from training.model_card import forward_gflops

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def latencies_ms(network, sizes: list[tuple[int, int]], repeats: int = 20) -> list[float]:
    """Median milliseconds of one forward pass of one image at each size, the sizes interleaved."""
    images = [torch.zeros(1, 3, *size) for size in sizes]
    timings: list[list[float]] = [[] for _ in sizes]
    with torch.inference_mode():
        for image in images:  # warm-up: the first pass at a new size allocates
            network.forward_with_features(image)
        for _ in range(repeats):
            for image, timing in zip(images, timings):
                start = time.perf_counter()
                network.forward_with_features(image)
                timing.append(1000 * (time.perf_counter() - start))
    return [statistics.median(timing) for timing in timings]


QUALITY_COLUMNS = ["val-dev J merged", "val-dev J oracle", "ECSSD accuracy", "ECSSD J", "ECSSD max F-β"]


def quality(network, spec: ModelSpec, size: tuple[int, int], ecssd_limit: int | None) -> list[float]:
    """What ``gwm eval`` scores, fed at ``size``: the values of :data:`QUALITY_COLUMNS`, as fractions."""
    davis = evaluate_davis(network, DEFAULT_EVAL_DATA, size, merge=spec.merge)["overall"]
    photos = evaluate_images(network, SHARED / "ecssd" / "images", SHARED / "ecssd" / "masks", size,
                             limit=ecssd_limit, keep_aspect=spec.keep_aspect)
    return [davis["merged"]["J_mean"], davis["oracle"]["J_mean"], photos["pixel_accuracy"], photos["J"],
            photos["max_F_beta"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="checkpoint (.pt) or exported model (.onnx) that takes any input size")
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[parse_size(s) for s in
                                                                  ("96x168", "112x192", "128x224", "144x256")],
                        help="input sizes HxW to feed (default 96x168 112x192 128x224 144x256)")
    parser.add_argument("--ecssd-limit", type=int, help="score only the first N ECSSD photos")
    parser.add_argument("--flops-from", type=Path,
                        help="checkpoint whose network to count FLOPs of (default: the model itself if a .pt)")
    parser.add_argument("--cost-only", action="store_true", help="only GFLOPs and latency, no evaluation")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    network, spec = load_network(args.model)
    if not getattr(network, "any_input_size", spec.keep_aspect):
        raise SystemExit(f"{args.model} takes one input size only")
    flops_from = args.flops_from or (Path(args.model) if Path(args.model).suffix == ".pt" else None)

    counted = None if flops_from is None else load_model(flops_from)[0]
    costs = [None if counted is None else forward_gflops(counted, size) for size in args.sizes]
    timings = latencies_ms(network, args.sizes)
    quality_columns = [] if args.cost_only else QUALITY_COLUMNS
    scores = [[] if args.cost_only else quality(network, spec, size, args.ecssd_limit) for size in args.sizes]

    recorded = spec.input_size
    columns = ["input", "GFLOPs", "ms per image", *quality_columns]
    print(f"\nmodel {Path(args.model).name} (version {spec.version}, recorded input {recorded[0]}×{recorded[1]}), "
          f"{args.threads} thread(s)\n| {' | '.join(columns)} |\n|{' --- |' * len(columns)}")
    for size, cost, timing, score in zip(args.sizes, costs, timings, scores):
        label = f"{size[0]}×{size[1]}" + (" (recorded)" if tuple(size) == tuple(recorded) else "")
        cells = [label, "–" if cost is None else f"{cost:.2f}", f"{timing:.1f}", *(f"{100 * v:.1f}" for v in score)]
        print(f"| {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
