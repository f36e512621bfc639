"""Seconds a frame of the network's forward pass in each memory format, and of one adaptation step.

    python bench/bench_inference.py
    python bench/bench_inference.py models/weights/gwm-default.pt --threads 2 --repeats 5

Video jobs and evaluation run the PyTorch network (the adapted weights exist only there); the served
``/segment`` runs the ONNX export. The table compares, in one run and interleaved (so a machine
shared with other work slows each row alike): the forward pass on 16 frames at the input size in the
default (contiguous) layout and channels-last, the ONNX file through onnxruntime, and one adaptation
step (batch 8 at half the input size, the AdaptationSettings defaults) in both layouts. Compare
ratios within one run. ``training.checkpoint.load_model`` returns channels-last networks.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch

from training.adapt import AdaptationSettings
from training.batch import Batch
from training.checkpoint import load_model
from training.train import LossFunction, make_optimizer, train_step


def per_call(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", default=str(REPO / "models/weights/gwm-default.pt"))
    parser.add_argument("--onnx", default=str(REPO / "models/weights/gwm-default.onnx"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    channels_last, spec = load_model(args.checkpoint)
    contiguous = copy.deepcopy(channels_last).to(memory_format=torch.contiguous_format)
    height, width = spec.input_size
    frames = torch.rand(16, 3, height, width)
    rows: dict[str, tuple[Callable[[], object], int]] = {}  # name -> (one call, frames per call)

    def forward(model: torch.nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode():
                return model.forward_with_features(frames)
        return run

    rows["forward, contiguous"] = (forward(contiguous), len(frames))
    rows["forward, channels-last"] = (forward(channels_last), len(frames))
    if Path(args.onnx).is_file():
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: frames.numpy()}
        rows["forward, onnxruntime"] = (lambda: session.run(None, feed), len(frames))

    settings = AdaptationSettings()
    half = (round(height * settings.scale), round(width * settings.scale))
    batch = Batch(torch.rand(settings.batch_size, 3, *half), torch.randn(settings.batch_size, 2, *half))
    for layout, model in (("contiguous", contiguous), ("channels-last", channels_last)):
        config = dataclasses.replace(settings.train_config(), channels_last=layout == "channels-last")
        adapted = copy.deepcopy(model).train()
        optimizer, loss_fn = make_optimizer(adapted, config), LossFunction(config, torch.device("cpu"))
        rows[f"adaptation step, {layout}"] = (
            lambda a=adapted, o=optimizer, f=loss_fn, c=config: train_step(a, o, f, batch, c.lr, c), 1)

    for fn, _ in rows.values():  # warm-up: first calls allocate and pick kernels
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeats):  # interleaved: a busy moment slows every row alike
        for name, (fn, units) in rows.items():
            seconds[name].append(per_call(fn) / units)
    print(f"\n{spec.architecture} width {spec.options.get('width')}, input {height}x{width}, "
          f"{args.threads} thread(s), median of {args.repeats}")
    print(f"{'':30}{'ms':>9}{'vs first':>10}")
    baseline = {}
    for name, values in seconds.items():
        kind = name.split(",")[0]
        median = statistics.median(values) * 1000
        baseline.setdefault(kind, median)
        unit = "per frame" if kind == "forward" else "per step"
        print(f"{name:<30}{median:9.1f}{baseline[kind] / median:9.2f}x  {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
