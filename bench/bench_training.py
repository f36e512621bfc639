"""Training throughput (steps/s, images/s) of the default TrainConfig and a few variants.

    python bench/bench_training.py                 # default config + widths 16/32 + coarse scale
    python bench/bench_training.py --steps 5 --warmup 1 --threads 2

Batches are random tensors of the right shapes (images at the input size, flow on the loss grid in
reference units), so no flow cache or dataset is needed; the numbers are for the network, the loss and
the optimiser step, which is what a training step costs once the data is in memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.segmenters import build_segmenter
from training.batch import Batch
from training.train import LossFunction, TrainConfig, make_optimizer, select_device, train_step


def random_batch(config: TrainConfig, generator: torch.Generator) -> Batch:
    h, w = config.input_size
    lh, lw = config.loss_size or config.input_size  # a flow cache on the input grid is the default setup
    images = torch.randn(config.batch_size, 3, h, w, generator=generator)
    flows = (torch.rand(config.batch_size, 2, lh, lw, generator=generator) - 0.5) * 2 * (config.flow_clip or 20)
    return Batch(images=images, flows=flows)


def measure(config: TrainConfig, steps: int, warmup: int, device: torch.device) -> tuple[float, float]:
    torch.manual_seed(0)
    model = build_segmenter(config.architecture, **config.segmenter_options()).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = make_optimizer(model, config)
    loss_fn = LossFunction(config, device)
    generator = torch.Generator().manual_seed(0)
    batches = [random_batch(config, generator) for _ in range(min(steps, 4))]
    coarse = config.coarse_steps > 0

    def run(n: int) -> None:
        for i in range(n):
            batch = batches[i % len(batches)]
            if coarse:
                batch = batch.rescaled(config.coarse_scale)
            train_step(model, optimizer, loss_fn, batch, config.lr, config)
        if device.type == "cuda":
            torch.cuda.synchronize()

    run(warmup)
    start = time.perf_counter()
    run(steps)
    elapsed = time.perf_counter() - start
    return steps / elapsed, steps * config.batch_size / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--batch-size", type=int, help="override the batch size of every configuration")
    parser.add_argument("--widths", type=int, nargs="*", default=[16, 32], help="extra U-Net widths (default 16 32)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    base = TrainConfig()
    if args.batch_size:
        base = dataclasses.replace(base, batch_size=args.batch_size)
    variants = [("default", base)]
    variants += [(f"width {w}", dataclasses.replace(base, width=w)) for w in args.widths if w != base.width]
    variants.append((f"coarse x{base.coarse_scale}", dataclasses.replace(base, coarse_steps=1)))
    print(f"device {device}, {torch.get_num_threads()} threads, input {base.input_size[0]}x{base.input_size[1]}, "
          f"batch {base.batch_size}, K={base.num_regions}, {args.steps} timed steps after {args.warmup} warm-up")
    print(f"{'config':<14} {'width':>5} {'steps/s':>8} {'images/s':>9} {'s/step':>7}")
    for name, config in variants:
        steps_per_s, images_per_s = measure(config, args.steps, args.warmup, device)
        print(f"{name:<14} {config.width:>5} {steps_per_s:8.3f} {images_per_s:9.2f} {1 / steps_per_s:7.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
