"""One network fed at several input sizes: zero-shot J on unseen video and photos, and the cost.

    python bench/bench_input_size.py models/weights/gwm-default.onnx
    python bench/bench_input_size.py models/weights/gwm-default.pt --sizes 112x192 128x224 --ecssd-limit 300

A fully convolutional network takes any input size, and the size it was trained at need not be the one
it segments best at: the size sets how large objects are against the network's receptive field and its
four 2× poolings. Every row runs what ``gwm eval`` runs (DAVIS val-dev, the official frames and the
model's own merge; ECSSD with the ``framed`` merge, each photo in its own aspect ratio at the row's pixel
count when the model keeps the aspect), only the input size changes; a model exported with
``gwm export --input-size`` is then what the chosen row measured. GFLOPs: one forward pass at the row's
size (PyTorch FLOP counter; for an ``.onnx`` model, pass its training checkpoint with ``--flops-from``).
Both sets are unseen by the shipped model, and a size should be chosen only where both agree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.checkpoint import load_model  # noqa: E402
from training.cli import parse_size  # noqa: E402
from training.evaluate import evaluate_davis, evaluate_images  # noqa: E402
from training.export import load_network  # noqa: E402
from training.frames import DEFAULT_EVAL_DATA  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def gflops(checkpoint: Path, size: tuple[int, int]) -> float:
    """GFLOPs of one forward pass of ``checkpoint``'s network at ``size``."""
    model, _ = load_model(checkpoint)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.forward_with_features(torch.zeros(1, 3, *size))
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="checkpoint (.pt) or exported model (.onnx) that takes any input size")
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[parse_size(s) for s in
                                                                  ("96x168", "112x192", "128x224", "144x256")],
                        help="input sizes HxW to feed (default 96x168 112x192 128x224 144x256)")
    parser.add_argument("--ecssd-limit", type=int, help="score only the first N ECSSD photos")
    parser.add_argument("--flops-from", type=Path,
                        help="checkpoint whose network to count FLOPs of (default: the model itself if a .pt)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    network, spec = load_network(args.model)
    if not getattr(network, "any_input_size", spec.keep_aspect):
        raise SystemExit(f"{args.model} takes one input size only")
    flops_from = args.flops_from or (Path(args.model) if Path(args.model).suffix == ".pt" else None)

    rows = []
    for size in args.sizes:
        davis = evaluate_davis(network, DEFAULT_EVAL_DATA, size, merge=spec.merge)["overall"]
        photos = evaluate_images(network, SHARED / "ecssd" / "images", SHARED / "ecssd" / "masks", size,
                                 limit=args.ecssd_limit, keep_aspect=spec.keep_aspect)
        rows.append((size, None if flops_from is None else gflops(flops_from, size),
                     davis["merged"]["J_mean"], davis["oracle"]["J_mean"], photos["pixel_accuracy"], photos["J"],
                     photos["max_F_beta"]))

    trained = spec.input_size
    print(f"\nmodel {Path(args.model).name} (version {spec.version}, recorded input {trained[0]}×{trained[1]}), "
          f"{args.threads} thread(s), ECSSD {photos['images']} photos\n"
          "| input | GFLOPs | val-dev J merged | val-dev J oracle | ECSSD accuracy | ECSSD J | ECSSD max F-β |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    for size, cost, merged, oracle, accuracy, j, f_beta in rows:
        label = f"{size[0]}×{size[1]}" + (" (recorded)" if tuple(size) == tuple(trained) else "")
        cost_text = "–" if cost is None else f"{cost:.2f}"
        print(f"| {label} | {cost_text} | {100 * merged:.1f} | {100 * oracle:.1f} | {100 * accuracy:.1f} | "
              f"{100 * j:.1f} | {100 * f_beta:.1f} |")


if __name__ == "__main__":
    main()
