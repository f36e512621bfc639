"""Turning masks into response payloads: PNG, JSON summary, overlay, ZIP and mask video."""

from __future__ import annotations

import io
import itertools
import re
import zipfile
from collections.abc import Iterable
from pathlib import PurePosixPath

import av
import numpy as np
from PIL import Image

from service import rle

_OVERLAY_COLOUR = np.array([255, 40, 90], dtype=np.float32)
_LEVELS = np.arange(256, dtype=np.float32)
# Per channel, what each input level becomes: the foreground half-way to the tint, the background
# dimmed. Tables let the overlay be made in uint8, at the image's size, without a float copy.
_FOREGROUND_LUT = (0.5 * _LEVELS[None, :] + 0.5 * _OVERLAY_COLOUR[:, None]).astype(np.uint8)  # (3, 256)
_BACKGROUND_LUT = (0.55 * _LEVELS).astype(np.uint8)  # (256,)


def mask_png(mask: np.ndarray) -> bytes:
    """8-bit greyscale PNG, 255 = foreground.

    zlib level 1: a two-valued mask compresses well at any level, and level 1 takes ~40 % less time
    than the default 6 on the /segment hot path (0.7 vs 1.1 ms at 854×480).
    """
    buffer = io.BytesIO()
    Image.fromarray(np.multiply(mask, 255, dtype=np.uint8), mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def overlay_jpeg(rgb: np.ndarray, mask: np.ndarray) -> bytes:
    """The image with the foreground tinted and the background dimmed, for people to look at.

    Made in uint8 with lookup tables: besides the input, one RGB image and one channel-sized
    temporary exist at a time (a float version took five float32 copies of a 40 MP image).
    """
    tinted = _BACKGROUND_LUT[rgb]
    for channel in range(3):
        np.copyto(tinted[..., channel], _FOREGROUND_LUT[channel][rgb[..., channel]], where=mask)
    buffer = io.BytesIO()
    Image.fromarray(tinted, mode="RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def mask_summary(mask: np.ndarray, regions: list[dict[str, float]] | None = None) -> dict[str, object]:
    """Size, foreground area, bounding box (x0, y0, x1, y1 exclusive; null if empty) and RLE."""
    height, width = mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    bbox = [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1] if rows.size else None
    area = int(mask.sum())
    summary: dict[str, object] = {
        "width": width,
        "height": height,
        "foreground_area": area,
        "foreground_fraction": round(area / mask.size, 6),
        "bbox": bbox,
        "rle": rle.encode(mask),
    }
    if regions is not None:
        summary["regions"] = regions
    return summary


def zip_files(files: Iterable[tuple[str, bytes]]) -> bytes:
    """A ZIP archive of (name, content) pairs; PNGs are stored, not deflated again."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, content in files:
            archive.writestr(name, content)
    return buffer.getvalue()


def masks_zip(frame_indices: Iterable[int], masks: Iterable[np.ndarray]) -> bytes:
    """A video job's masks as a ZIP of PNGs named by source frame index (``00012.png``)."""
    return zip_files((f"{index:05d}.png", mask_png(mask)) for index, mask in zip(frame_indices, masks, strict=True))


def mask_video_mp4(masks: Iterable[np.ndarray], fps: float) -> bytes:
    """H.264 MP4 of the masks (white = foreground); odd sizes are padded to even for yuv420p.

    ``masks`` may be a generator (e.g. decoding RLE one mask at a time): one is held at a time."""
    masks = iter(masks)
    first = next(masks)
    height, width = first.shape
    even_h, even_w = height + height % 2, width + width % 2
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=max(1, round(fps)))
        stream.width, stream.height, stream.pix_fmt = even_w, even_h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "18"}
        for mask in itertools.chain([first], masks):
            grey = np.zeros((even_h, even_w), dtype=np.uint8)
            grey[:height, :width] = mask.astype(np.uint8) * 255
            frame = av.VideoFrame.from_ndarray(np.repeat(grey[..., None], 3, axis=2), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def safe_stem(filename: str, fallback: str = "image") -> str:
    """A client's file name, reduced to a harmless ZIP entry stem.

    Directories (``/`` or ``\\``), the extension, ``..`` and characters other than letters, digits,
    ``.``, ``-`` and ``_`` go, so no unzip tool writes outside its folder or trips on odd names.
    """
    stem = PurePosixPath(filename.replace("\\", "/")).stem
    cleaned = re.sub(r"[^\w.-]+", "_", stem).lstrip("._")[:100]
    return cleaned or fallback
