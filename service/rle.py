"""COCO-style run-length encoding of binary masks (the compressed string form of pycocotools).

Output of :func:`encode` is ``{"size": [h, w], "counts": str}`` and decodes
with ``pycocotools.mask.decode`` as well as with :func:`decode` here, so
clients need no extra dependency.
"""

from __future__ import annotations

import numpy as np


def encode(mask: np.ndarray) -> dict[str, object]:
    """Encode a HxW boolean mask, column-major, runs alternating from background."""
    height, width = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs.insert(0, 0)
    return {"size": [height, width], "counts": _runs_to_string(runs)}


def decode(rle: dict[str, object]) -> np.ndarray:
    """Inverse of :func:`encode`."""
    height, width = rle["size"]  # type: ignore[misc]
    runs = _string_to_runs(str(rle["counts"]))
    values = np.arange(len(runs)) % 2 == 1
    flat = np.repeat(values, runs)
    return flat.reshape((width, height)).T


def _runs_to_string(runs: list[int]) -> str:
    chars: list[str] = []
    for i, run in enumerate(runs):
        x = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return "".join(chars)


def _string_to_runs(text: str) -> list[int]:
    runs: list[int] = []
    pos = 0
    while pos < len(text):
        x, shift, more = 0, 0, True
        while more:
            c = ord(text[pos]) - 48
            x |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                x |= -1 << shift
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs
