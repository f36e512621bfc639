"""DAVIS J of a checkpoint on val-dev, for each label-free merge strategy and the oracle merge.

    python bench/bench_eval.py runs/default/last.pt
    python bench/bench_eval.py runs/default/last.pt --protocol gwm-reference --merge border

A thin wrapper around training.evaluate.evaluate_davis and format_table (the same numbers as
`gwm eval --merge ...`). Prints one per-sequence table per strategy, then a summary comparing the
strategies with the oracle. Bounded by the split's size; --max-sequences evaluates only the first N.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.merge_strategy import MergeStrategy
from training.checkpoint import load_model
from training.evaluate import PROTOCOLS, evaluate_davis, format_table
from training.frames import DEFAULT_EVAL_DATA
from training.train import select_device

DATA = (REPO / DEFAULT_EVAL_DATA).resolve()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="model checkpoint (.pt)")
    parser.add_argument("--data", default=str(DATA), help=f"DAVIS-2016 root (default {DATA})")
    parser.add_argument("--split", default="val-dev", help="ImageSets split (default val-dev)")
    parser.add_argument("--protocol", default="davis", choices=PROTOCOLS, help="frame protocol (default davis)")
    parser.add_argument("--max-sequences", type=int, help="only the first N sequences of the split")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--merge", nargs="+", choices=[m.value for m in MergeStrategy], default=list(MergeStrategy),
                        help="merge strategies to compare (default: all)")
    args = parser.parse_args()
    data = Path(args.data)
    listing = data / "ImageSets" / f"{args.split}.txt"
    if not listing.is_file():
        print(f"split file not found: {listing}", file=sys.stderr)
        return 2
    device = select_device(args.device)
    model, spec = load_model(args.checkpoint, device)
    split = args.split
    with tempfile.TemporaryDirectory() as tmp:
        if args.max_sequences:
            # a temporary root whose split lists fewer sequences, with links to the real folders
            names = [n.strip() for n in listing.read_text().splitlines() if n.strip()][: args.max_sequences]
            root = Path(tmp)
            (root / "ImageSets").mkdir()
            (root / "ImageSets" / "subset.txt").write_text("\n".join(names) + "\n")
            for sub in ("JPEGImages", "Annotations"):
                (root / sub).symlink_to(data / sub)
            data, split = root, "subset"
        summary = []
        for merge in args.merge:
            start = time.perf_counter()
            report = evaluate_davis(model, data, spec.input_size, split=split, protocol=args.protocol,
                                    device=device, progress=False, merge=merge)
            elapsed = time.perf_counter() - start
            print(f"\ncheckpoint {args.checkpoint} (version {spec.version}), split {args.split}, "
                  f"protocol {args.protocol}, merge {merge}, {len(report['sequences'])} sequences in {elapsed:.0f} s")
            print(format_table(report))
            overall = report["overall"]
            summary.append((merge, 100 * overall["merged"]["J_mean"], 100 * overall["oracle"]["J_mean"]))
    print(f"\n{'merge':<10} {'J merged':>9} {'J oracle':>9} {'gap':>6}   (model's own merge: {spec.merge})")
    for merge, merged, oracle in summary:
        print(f"{merge:<10} {merged:9.1f} {oracle:9.1f} {oracle - merged:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
