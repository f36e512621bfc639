"""Safe decoding of uploaded images into RGB uint8 arrays.

Guards, in order: the pixel count is read from the header and checked before
any pixel data is decoded (decompression bombs); truncated or corrupt data is
a 400; unknown data is a 415 with a hint when it is a video. Multi-frame
images (animated GIF/WebP/PNG, multi-page TIFF) use their first frame. EXIF
orientation is applied so masks match the image as people see it.
"""

from __future__ import annotations

import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import BadInput, ServiceError, TooLarge, UnsupportedMedia

SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF"})

# Container signatures of the video formats accepted by /adapt-and-segment,
# used only to give a helpful message when one is posted to /segment.
_VIDEO_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"),  # mp4, mov
    (0, b"\x1a\x45\xdf\xa3"),  # mkv, webm
    (8, b"AVI "),  # avi (RIFF)
)


# Signatures of the accepted image formats (BMP's two-byte "BM" is left out: too
# likely in text). A file that has one but that Pillow cannot identify is damaged.
_IMAGE_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (0, b"\x89PNG\r\n\x1a\n"),
    (0, b"\xff\xd8\xff"),  # JPEG
    (0, b"GIF8"),
    (8, b"WEBP"),
    (0, b"II*\x00"),  # TIFF, little-endian
    (0, b"MM\x00*"),  # TIFF, big-endian
)


def _has_signature(head: bytes, signatures: tuple[tuple[int, bytes], ...]) -> bool:
    return any(head[offset : offset + len(sig)] == sig for offset, sig in signatures)


def looks_like_video(head: bytes) -> bool:
    """Whether the first bytes of a file carry a video container signature."""
    return _has_signature(head, _VIDEO_SIGNATURES)


def open_image(fp: BinaryIO, max_pixels: int) -> Image.Image:
    """Read an image's header, not its pixels: format, size and the pixel limit are checked here.

    A request's pixel budget is summed from these headers before anything is decoded. The caller
    closes the returned image. Raises UnsupportedMedia (415), TooLarge (413) or BadInput (400).
    """
    head = fp.read(16)
    if not head:
        raise BadInput("the uploaded file is empty")
    fp.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooLarge(f"image rejected as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        if looks_like_video(head):
            raise UnsupportedMedia("this is a video; post videos to /adapt-and-segment") from exc
        if _has_signature(head, _IMAGE_SIGNATURES):
            raise BadInput("image header is truncated or corrupt") from exc
        raise UnsupportedMedia("not a recognised image (supported: JPEG, PNG, WebP, BMP, TIFF, GIF)") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # a header Pillow recognised but could not read
        raise BadInput(f"image header is truncated or corrupt: {exc}") from exc
    try:
        if image.format not in SUPPORTED_FORMATS:
            raise UnsupportedMedia(f"image format {image.format} is not supported")
        width, height = image.size
        if width * height > max_pixels:
            raise TooLarge(f"image has {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
        if width == 0 or height == 0:
            raise BadInput("image has zero width or height")
    except ServiceError:
        image.close()
        raise
    return image


def decode_opened(image: Image.Image) -> np.ndarray:
    """Decode an image from :func:`open_image` to an oriented HxWx3 uint8 RGB array.

    The first frame is used; EXIF orientation is applied in place, so no second full-size copy
    exists. Raises BadInput (400) for truncated or corrupt pixel data.
    """
    try:
        image.seek(0)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow signals truncation/corruption this way
        raise BadInput(f"image data is truncated or corrupt: {exc}") from exc
    return to_rgb(image)


def decode_image(fp: BinaryIO, max_pixels: int) -> np.ndarray:
    """:func:`open_image` and :func:`decode_opened` in one call, for one file on its own (``gwm segment``)."""
    with open_image(fp, max_pixels) as image:
        return decode_opened(image)


def to_rgb(image: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to RGB uint8, keeping the full range of high-bit-depth images.

    Transparent pixels are composited on white so their (arbitrary) hidden
    colour does not influence the segmentation. Integer modes are rescaled in
    integer arithmetic and float images in float32 in place, so a 40 MP image
    never has a float64 copy.
    """
    if image.mode in {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}:
        grey = _to_uint8(np.asarray(image))
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        image = canvas
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Map grey levels to 0..255: float by min/max, integers above 255 by the 16-bit range (v / 257)."""
    if values.dtype.kind == "f":
        scaled = values.astype(np.float32)  # a copy: Pillow's buffer is read-only
        low, high = float(scaled.min()), float(scaled.max())
        if high <= low:
            return np.zeros(values.shape, np.uint8)
        scaled -= low
        scaled *= 255.0 / (high - low)
        np.rint(scaled, out=scaled)
        return scaled.astype(np.uint8)
    if values.max() <= 255:
        return np.clip(values, 0, 255).astype(np.uint8)
    # round(v / 257) for 0 <= v <= 65535, exact: v / 257 is never half-way for an integer v
    clipped = np.clip(values, 0, 65535).astype(np.uint32)
    clipped += 128
    clipped //= 257
    return clipped.astype(np.uint8)
