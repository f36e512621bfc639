"""Reading folders of video frames.

Two layouts are understood:

- DAVIS-style: ``<root>/JPEGImages/<resolution>/<sequence>/*.jpg``, sequence lists in
  ``<root>/ImageSets/<split>.txt`` (one name per line);
- plain: ``<root>/<sequence>/*.jpg`` (any folder of frame folders; no splits).

When no split is named every sequence folder is used. Training can draw on several roots at once
(:func:`list_sources`), each with its own sequence list, written ``ROOT`` or ``ROOT:SPLIT[,SPLIT…]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["DEFAULT_EVAL_DATA", "DEFAULT_EVAL_SPLIT", "DEFAULT_RESOLUTION", "DEFAULT_TRAIN_DATA", "IMAGE_SUFFIXES", "DataSource", "VideoFolder", "list_sequences", "list_sources", "read_rgb"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

#: The ``JPEGImages`` sub-folder frames are read from (the DAVIS frame size the paper trains on).
DEFAULT_RESOLUTION = "240p"
#: Where the datasets live by default, relative to the repository root (the working directory of
#: ``gwm``, tests and benches alike).
_SHARED_DATA = "../shared/data"
#: The annotated videos evaluation reads (``ImageSets/val-dev.txt`` and ``Annotations/480p``).
DEFAULT_EVAL_DATA = f"{_SHARED_DATA}/davis2016"
#: The split of :data:`DEFAULT_EVAL_DATA` that evaluation and the learning curve measure.
DEFAULT_EVAL_SPLIT = "val-dev"
#: What ``gwm flow`` and ``gwm train`` use by default: the DAVIS-2016 train split and the DAVIS-2017
#: test-dev videos, never DAVIS-2016 val, so that val-dev stays unseen (the paper's Table 4 protocol).
DEFAULT_TRAIN_DATA: tuple[str, ...] = (f"{DEFAULT_EVAL_DATA}:train", f"{_SHARED_DATA}/davis2017-testdev:test-dev")


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


def _frame_root(root: Path, resolution: str) -> Path:
    """``<root>/JPEGImages/<resolution>`` for a DAVIS-style root, else the root itself."""
    davis = root / "JPEGImages" / resolution
    if davis.is_dir():
        return davis
    if (root / "JPEGImages").is_dir():
        raise FileNotFoundError(f"no frame folder {davis} (expected <root>/JPEGImages/<resolution>/<seq>/)")
    if not root.is_dir():
        raise FileNotFoundError(f"no such data folder: {root}")
    return root


def list_sequences(
    root: str | Path,
    resolution: str = DEFAULT_RESOLUTION,
    splits: list[str] | None = None,
) -> list[VideoFolder]:
    """Every sequence of the named splits (or all of them), frames sorted by file name."""
    root = Path(root)
    frame_root = _frame_root(root, resolution)
    names = _split_names(root, splits) if splits else sorted(p.name for p in frame_root.iterdir() if p.is_dir())
    sequences = []
    for name in names:
        folder = frame_root / name
        frames = tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        if len(frames) < 2:
            raise ValueError(f"sequence {folder} has fewer than two frames")
        sequences.append(VideoFolder(name, frames))
    return sequences


@dataclass(frozen=True)
class DataSource:
    """One root of training video and, optionally, the splits (sequence lists) to take from it."""

    root: str
    splits: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> DataSource:
        """``ROOT`` or ``ROOT:SPLIT[,SPLIT…]`` (e.g. ``../shared/data/davis2016:train``)."""
        root, sep, splits = text.rpartition(":")
        if not sep or "/" in splits or not root:
            return cls(text)
        return cls(root, tuple(s for s in splits.split(",") if s))

    def __str__(self) -> str:
        return f"{self.root}:{','.join(self.splits)}" if self.splits else self.root


def list_sources(sources: list[str] | list[DataSource], resolution: str = DEFAULT_RESOLUTION) -> list[VideoFolder]:
    """The sequences of several roots together; a sequence name may appear only once, because the
    flow cache and the logs key sequences by name."""
    videos: list[VideoFolder] = []
    seen: dict[str, str] = {}
    for source in sources:
        source = source if isinstance(source, DataSource) else DataSource.parse(source)
        for video in list_sequences(source.root, resolution, list(source.splits) or None):
            if video.name in seen:
                raise ValueError(f"sequence {video.name!r} is in both {seen[video.name]} and {source.root}; "
                                 "rename one of them")
            seen[video.name] = source.root
            videos.append(video)
    return videos
