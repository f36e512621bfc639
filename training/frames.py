"""Reading DAVIS-style folders of video frames: ``<root>/JPEGImages/<resolution>/<sequence>/*.jpg``.

Sequence lists come from ``<root>/ImageSets/<split>.txt`` (one name per line) when a split is named,
otherwise every sequence folder is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["VideoFolder", "list_sequences", "read_rgb", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@dataclass(frozen=True)
class VideoFolder:
    """One sequence: its name and its frame files in temporal order."""

    name: str
    frames: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.frames)

    def read(self, index: int) -> np.ndarray:
        return read_rgb(self.frames[index])


def _split_names(root: Path, splits: list[str]) -> list[str]:
    names: list[str] = []
    for split in splits:
        listing = root / "ImageSets" / f"{split}.txt"
        if not listing.is_file():
            raise FileNotFoundError(f"split file not found: {listing}")
        names += [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    return names


def list_sequences(
    root: str | Path,
    resolution: str = "240p",
    splits: list[str] | None = None,
) -> list[VideoFolder]:
    """Every sequence of the named splits (or all of them), frames sorted by file name."""
    root = Path(root)
    frame_root = root / "JPEGImages" / resolution
    if not frame_root.is_dir():
        raise FileNotFoundError(f"no frame folder {frame_root} (expected <root>/JPEGImages/<resolution>/<seq>/)")
    names = _split_names(root, splits) if splits else sorted(p.name for p in frame_root.iterdir() if p.is_dir())
    sequences = []
    for name in names:
        folder = frame_root / name
        frames = tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        if len(frames) < 2:
            raise ValueError(f"sequence {folder} has fewer than two frames")
        sequences.append(VideoFolder(name, frames))
    return sequences
