"""Test-time adaptation (paper App. C.1) on DAVIS val-dev: J per sequence before and after, per setting.

    python bench/bench_adapt.py models/weights/gwm-default.pt
    python bench/bench_adapt.py models/weights/gwm-default.pt --steps 20 --max-sequences 4

Each sequence is adapted in isolation from the checkpoint (what a `/adapt-and-segment` job does),
with the same flow for every setting: `paper` (training lr, batch-norm statistics updated),
`frozen-norm` (batch-norm statistics kept), `low-lr` (lr / 7). J uses the model's own merge and the
official DAVIS frame protocol (first and last frames excluded).

``--h264`` adapts on the frames as an upload would deliver them: upscaled 2× (854×480), encoded with
H.264 (libx264 defaults) and decoded by PyAV; J is still measured on the original frames, so the
difference to the plain run is what compression does to the flow and to adaptation.
"""

from __future__ import annotations

import argparse
import copy
import io
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.adapt import AdaptationSettings, adapt  # noqa: E402
from training.checkpoint import load_model  # noqa: E402
from training.data import FlowPairDataset  # noqa: E402
from training.evaluate import evaluate_sequence  # noqa: E402
from training.flow import DEFAULT_FLOW_METHOD, FLOW_METHODS, build_flow_estimator  # noqa: E402
from training.frames import DEFAULT_EVAL_DATA, list_sequences  # noqa: E402

DATA = (REPO / DEFAULT_EVAL_DATA).resolve()
SETTINGS = {
    "paper": {},
    "frozen-norm": {"freeze_norm": True},
    "low-lr": {"lr": 1e-4},
}


def h264_round_trip(frames: list[np.ndarray], scale: int = 2, fps: int = 24) -> list[np.ndarray]:
    """``frames`` upscaled ``scale``× (even size), encoded with libx264 in memory and decoded again."""
    height, width = (2 * (s * scale // 2) for s in frames[0].shape[:2])
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            large = cv2.resize(frame, (width, height), interpolation=cv2.INTER_CUBIC)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(large, format="rgb24")))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def sequence_j(model, video, data: str, input_size, merge: str) -> float:
    """J mean of the merged masks, official protocol (the same code as `gwm eval`)."""
    return evaluate_sequence(model, video, data, input_size, merge=merge)["merged"]["J_mean"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--max-sequences", type=int)
    parser.add_argument("--h264", action="store_true", help="adapt on an H.264 round trip of the frames")
    parser.add_argument("--flow-method", default=DEFAULT_FLOW_METHOD, choices=sorted(FLOW_METHODS),
                        help=f"flow the adaptation uses (default {DEFAULT_FLOW_METHOD}, the CPU video-job default)")
    parser.add_argument("--raft-weights", help="local RAFT weights, for --flow-method raft")
    args = parser.parse_args()
    model, spec = load_model(args.checkpoint)
    input_size, merge = spec.input_size, spec.merge
    estimator = build_flow_estimator(args.flow_method, **({"weights": args.raft_weights} if args.raft_weights else {}))
    videos = list_sequences(args.data, "240p", ["val-dev"])[: args.max_sequences]
    rows, start = [], time.perf_counter()
    for video in videos:
        frames = [video.read(i) for i in range(len(video))]
        if args.h264:
            frames = h264_round_trip(frames)
        dataset = FlowPairDataset.from_frames(frames, estimator, AdaptationSettings().gaps, input_size)
        row = {"sequence": video.name, "before": sequence_j(model, video, args.data, input_size, merge)}
        for name in args.settings:
            adapted = copy.deepcopy(model)
            adapt(adapted, dataset, AdaptationSettings(steps=args.steps, **SETTINGS[name]), torch.device("cpu"))
            row[name] = sequence_j(adapted, video, args.data, input_size, merge)
        rows.append(row)
        print("  ".join(f"{k} {100 * v:.1f}" if isinstance(v, float) else v for k, v in row.items()), flush=True)
    columns = ["before", *args.settings]
    source = "H.264 round trip (854×480)" if args.h264 else "original frames"
    print(f"\n{args.steps} adaptation steps per sequence on {source}, {args.flow_method} flow, merge {merge}, {time.perf_counter() - start:.0f} s")
    print(f"{'sequence':<20}" + "".join(f"{c:>13}" for c in columns))
    for row in rows:
        print(f"{row['sequence']:<20}" + "".join(f"{100 * row[c]:13.1f}" for c in columns))
    print(f"{'MEAN':<20}" + "".join(f"{100 * np.mean([r[c] for r in rows]):13.1f}" for c in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
