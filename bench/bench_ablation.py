"""Short-budget ablations: flow method, motion model, fit weighting and K, each trained the same way.

Every variant trains a fresh U-Net for ``--steps`` steps at a reduced input size (default 64×112,
which is where a CPU can afford several runs) on the flow cache of its method, then is evaluated on
DAVIS val-dev (J mean, merged and oracle). Prints a table; figures are comparable within one run only.

    python bench/bench_ablation.py --steps 1500
    python bench/bench_ablation.py --variants dis-quadratic farneback-quadratic
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from training.checkpoint import load_model
from training.evaluate import evaluate_davis
from training.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]

#: name -> (flow cache directory, TrainConfig overrides)
VARIANTS: dict[str, tuple[str, dict]] = {
    "dis-quadratic": ("cache/flow-dis-128x224", {}),
    "dis-fine-quadratic": ("cache/flow-dis-fine-128x224", {}),
    "farneback-quadratic": ("cache/flow-farneback-128x224", {}),
    "dis-affine": ("cache/flow-dis-128x224", {"motion_model": "affine"}),
    "dis-constant": ("cache/flow-dis-128x224", {"motion_model": "constant"}),
    "dis-quadratic-p2": ("cache/flow-dis-128x224", {"weight_power": 2}),
    "dis-quadratic-k2": ("cache/flow-dis-128x224", {"num_regions": 2}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--size", default="64x112", help="input and loss grid HxW")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default="runs/ablation", help="one sub-directory per variant")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.variants:
        cache, overrides = VARIANTS[name]
        config = TrainConfig(
            output_dir=str(ROOT / args.output / name), flow_cache=str(ROOT / cache),
            data=[str(ROOT.parent / "shared" / "data" / "davis2016") + ":train,val-dev"],
            eval_data=str(ROOT.parent / "shared" / "data" / "davis2016"),
            width=args.width, batch_size=8, steps=args.steps, warmup_steps=min(500, args.steps // 5),
            input_size=size, loss_size=size, threads=args.threads, checkpoint_every=args.steps, **overrides,
        )
        start = time.perf_counter()
        checkpoint = train(config, progress=False)
        minutes = (time.perf_counter() - start) / 60
        model, _ = load_model(checkpoint)
        report = evaluate_davis(model, config.eval_data, size, progress=False, merge=config.merge_strategy())
        overall = report["overall"]
        rows.append((name, minutes, 100 * overall["merged"]["J_mean"], 100 * overall["oracle"]["J_mean"]))
        (Path(config.output_dir) / "eval.json").write_text(json.dumps(report, indent=2))
        print(f"{name}: J merged {rows[-1][2]:.1f}, oracle {rows[-1][3]:.1f} ({minutes:.1f} min)", flush=True)
    print(f"\n{'variant':<22} {'train min':>9} {'J merged':>9} {'J oracle':>9}   ({args.steps} steps at {args.size})")
    for name, minutes, merged, oracle in rows:
        print(f"{name:<22} {minutes:9.1f} {merged:9.1f} {oracle:9.1f}")


if __name__ == "__main__":
    main()
