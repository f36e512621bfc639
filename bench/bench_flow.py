"""Optical-flow speed per method on real DAVIS frames (frames/s = flow fields per second).

    python bench/bench_flow.py                      # 6 pairs of 'bear' per method
    python bench/bench_flow.py --pairs 10 --sequence blackswan --methods dis farneback

Frames come from ../shared/data/davis2016/JPEGImages/240p next to the repository. Flow is computed at
the frames' own resolution (as `gwm flow` does before resizing to the cache grid).
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.flow import build_flow_estimator
from training.frames import DEFAULT_EVAL_DATA, DEFAULT_RESOLUTION, read_rgb

FRAMES = (REPO / DEFAULT_EVAL_DATA / "JPEGImages" / DEFAULT_RESOLUTION).resolve()
METHODS = ["dis-ultrafast", "dis-fast", "dis", "dis-fine", "farneback"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequence", default="bear", help="DAVIS sequence (default bear)")
    parser.add_argument("--pairs", type=int, default=6, help="frame pairs per method (default 6)")
    parser.add_argument("--methods", nargs="+", default=METHODS, help=f"default: {' '.join(METHODS)}")
    parser.add_argument("--threads", type=int, default=0, help="OpenCV threads (default 0 = OpenCV's choice)")
    args = parser.parse_args()
    folder = FRAMES / args.sequence
    if not folder.is_dir():
        print(f"DAVIS frames not found: {folder}", file=sys.stderr)
        return 2
    if args.threads:
        cv2.setNumThreads(args.threads)
    paths = sorted(folder.glob("*.jpg"))[: args.pairs + 1]
    frames = [read_rgb(p) for p in paths]
    print(f"{args.sequence}: {len(frames) - 1} pairs of {frames[0].shape[1]}x{frames[0].shape[0]}, "
          f"OpenCV {cv2.__version__}, {cv2.getNumThreads()} threads")
    print(f"{'method':<14} {'frames/s':>9} {'ms/frame':>9} {'median |flow| px':>17}")
    for method in args.methods:
        estimator = build_flow_estimator(method)
        estimator(frames[0], frames[1])  # warm-up
        magnitudes = []
        start = time.perf_counter()
        for a, b in pairwise(frames):
            flow = estimator(a, b)
            magnitudes.append(float(np.median(np.linalg.norm(flow, axis=-1))))
        elapsed = time.perf_counter() - start
        n = len(frames) - 1
        print(f"{method:<14} {n / elapsed:9.2f} {1000 * elapsed / n:9.1f} {np.mean(magnitudes):17.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
