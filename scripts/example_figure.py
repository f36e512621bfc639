"""Draw the README's example picture: frames the model never trained on, its masks, and the overlays.

    python scripts/example_figure.py                     # the shipped model -> docs/example.png
    python scripts/example_figure.py --model runs/x/mid.onnx --output /tmp/example.png

One row per frame: the input, the mask `POST /segment` returns for it (the service's ONNX path,
edge refinement on), and the mask in red over the frame. The default frames are val-dev's
car-roundabout and cows, frame 30: a zero-shot view, since the shipped model trains without val-dev.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.inference import OnnxSegmenter

FRAMES = REPO.parent / "shared" / "data" / "davis2016" / "JPEGImages" / "240p"
DEFAULT_FRAMES = ("car-roundabout/00030", "cows/00030")
OVERLAY_RED, OVERLAY_ALPHA = np.array([220, 20, 60], dtype=np.float32), 0.6


def figure_row(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The frame, its mask in white on black, and the mask in red over the frame, side by side."""
    white = np.repeat(mask[..., None].astype(np.uint8) * 255, 3, axis=2)
    overlay = rgb.astype(np.float32)
    overlay[mask] = (1 - OVERLAY_ALPHA) * overlay[mask] + OVERLAY_ALPHA * OVERLAY_RED
    return np.concatenate([rgb, white, overlay.round().astype(np.uint8)], axis=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "weights" / "gwm-default.onnx")
    parser.add_argument("--frames", nargs="+", default=list(DEFAULT_FRAMES), metavar="SEQUENCE/FRAME",
                        help=f"frames under {FRAMES} (default: {' '.join(DEFAULT_FRAMES)})")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "example.png")
    args = parser.parse_args()
    images = [np.asarray(Image.open(FRAMES / f"{name}.jpg").convert("RGB")) for name in args.frames]
    segmenter = OnnxSegmenter(args.model, device="cpu")
    rows = [figure_row(rgb, result.mask) for rgb, result in zip(images, segmenter.segment(images, refine=True))]
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.output, optimize=True)
    print(f"{args.output}: model {segmenter.info.version}, frames {' '.join(args.frames)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
