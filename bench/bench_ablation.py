"""Short-budget levers, measured zero-shot: flow, augmentation, width, loss grid, motion model, …

Every variant trains a fresh U-Net for ``--steps`` steps, the same way, on the default training data
(DAVIS-2016 train + DAVIS-2017 test-dev: val-dev is never seen), at a reduced input size (default
64×112, where a CPU can afford several runs), then is scored on what it never trained on: DAVIS
val-dev J (label-free merge and oracle) and ECSSD J. Pick by those, never by the training loss.
Figures are comparable within one run of this script only.

    python bench/bench_ablation.py --variants raft raft-aug dis-fine --steps 1500
    python bench/bench_ablation.py --variants raft-aug raft-aug-w24 --threads 1 --output runs/levers

Each variant needs its flow cache (``gwm flow``; the RAFT ones: ``gwm flow --method raft
--raft-weights ../shared/weights/raft-small.pth``). Runs resume: a variant whose run directory holds
a finished ``last.pt`` is only re-evaluated.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from models.preprocessing import DEFAULT_INPUT_SIZE
from training.checkpoint import load_model
from training.evaluate import evaluate_davis, evaluate_images
from training.flow_cache import default_cache_dir
from training.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RAFT = default_cache_dir("raft-1x6", DEFAULT_INPUT_SIZE)
DIS_FINE = default_cache_dir("dis-fine", DEFAULT_INPUT_SIZE)
#: Appearance augmentation and zoom crops (training/augment.py) as the levers use them.
AUGMENTED = {"colour_jitter": 0.4, "grey_probability": 0.1, "blur_probability": 0.2, "max_zoom": 1.5}

#: name -> (flow cache directory, TrainConfig overrides)
VARIANTS: dict[str, tuple[str, dict]] = {
    "dis-fine": (DIS_FINE, {}),
    "raft": (RAFT, {}),
    "raft-aug": (RAFT, AUGMENTED),
    "raft-colour": (RAFT, {k: v for k, v in AUGMENTED.items() if k != "max_zoom"}),
    "raft-zoom": (RAFT, {"max_zoom": AUGMENTED["max_zoom"]}),
    "raft-aug-cp": (RAFT, {**AUGMENTED, "copy_paste": 0.5}),
    "raft-aug-w24": (RAFT, {**AUGMENTED, "width": 24}),
    "raft-aug-w32": (RAFT, {**AUGMENTED, "width": 32}),
    "raft-aug-loss-half": (RAFT, {**AUGMENTED, "loss_size": "half"}),
    "raft-affine": (RAFT, {"motion_model": "affine"}),
    "raft-p2": (RAFT, {"weight_power": 2}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["dis-fine", "raft", "raft-aug"], choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--size", default="64x112", help="input size HxW (the loss grid is the same unless a "
                                                         "variant says otherwise; default 64x112)")
    parser.add_argument("--width", type=int, default=16, help="U-Net width unless a variant sets it (default 16)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ecssd-limit", type=int, default=None, help="score only the first N ECSSD images")
    parser.add_argument("--output", default="runs/ablation", help="one sub-directory per variant")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.variants:
        cache, overrides = VARIANTS[name]
        overrides = dict(overrides)
        if overrides.get("loss_size") == "half":
            overrides["loss_size"] = (size[0] // 2, size[1] // 2)
        config = TrainConfig(**{
            "output_dir": str(ROOT / args.output / name), "flow_cache": str(ROOT / cache),
            "width": args.width, "batch_size": args.batch_size, "steps": args.steps,
            "warmup_steps": min(500, args.steps // 5), "input_size": size, "loss_size": size,
            "threads": args.threads, "checkpoint_every": 250, **overrides,
        })
        start = time.perf_counter()
        checkpoint = train(config, progress=False)
        minutes = (time.perf_counter() - start) / 60
        model, spec = load_model(checkpoint)
        merge = config.recorded_merge()
        davis = evaluate_davis(model, config.eval_data, size, progress=False, merge=merge)["overall"]
        ecssd = evaluate_images(model, SHARED / "ecssd" / "images", SHARED / "ecssd" / "masks", size,
                                limit=args.ecssd_limit, progress=False, keep_aspect=spec.keep_aspect)
        row = {"variant": name, "minutes": minutes, "J_merged": 100 * davis["merged"]["J_mean"],
               "J_oracle": 100 * davis["oracle"]["J_mean"], "ecssd_J": 100 * ecssd["J"],
               "ecssd_F": 100 * ecssd["max_F_beta"]}
        rows.append(row)
        (Path(config.output_dir) / "eval.json").write_text(json.dumps(row, indent=2))
        print(json.dumps(row), flush=True)
    print(f"\n| variant | train min | val-dev J (merged) | val-dev J (oracle) | ECSSD J | ECSSD max F-β |"
          f"\n|---|---|---|---|---|---|   ({args.steps} steps at {args.size}, zero-shot)")
    for r in rows:
        print(f"| {r['variant']} | {r['minutes']:.1f} | {r['J_merged']:.1f} | {r['J_oracle']:.1f} | "
              f"{r['ecssd_J']:.1f} | {r['ecssd_F']:.1f} |")


if __name__ == "__main__":
    main()
