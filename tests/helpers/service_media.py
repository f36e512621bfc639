"""Media files for the service tests, made on the fly: images in every format/mode and small videos."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
from PIL import Image

from helpers.paths import DAVIS_FRAMES


def gradient_rgb(width: int = 96, height: int = 64) -> np.ndarray:
    """A smooth image with a bright square: something to segment, deterministic."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), np.full_like(x, 80)], axis=2)
    rgb[height // 4 : 3 * height // 4, width // 3 : 2 * width // 3] = (250, 240, 30)
    return rgb.astype(np.uint8)


def encode_image(image: Image.Image, format: str, **options: object) -> bytes:
    """Bytes of ``image`` saved in ``format``."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def image_variants(width: int = 96, height: int = 64) -> dict[str, bytes]:
    """One file per supported format and mode, all of size ``width`` x ``height``."""
    rgb = Image.fromarray(gradient_rgb(width, height))
    grey16 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)  # mode I;16
    return {
        "rgb.jpg": encode_image(rgb, "JPEG", quality=90),
        "rgba.png": encode_image(rgb.convert("RGBA"), "PNG"),
        "grey.png": encode_image(rgb.convert("L"), "PNG"),
        "palette.png": encode_image(rgb.convert("P"), "PNG"),
        "grey16.png": encode_image(grey16, "PNG"),
        "rgb.webp": encode_image(rgb, "WEBP"),
        "rgb.bmp": encode_image(rgb, "BMP"),
        "rgb.tiff": encode_image(rgb, "TIFF"),
        "cmyk.jpg": encode_image(rgb.convert("CMYK"), "JPEG"),
    }


def exif_rotated_jpeg(width: int = 96, height: int = 64) -> bytes:
    """A JPEG stored as ``width`` x ``height`` whose EXIF says rotate 90° (displayed ``height`` x ``width``)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    return encode_image(Image.fromarray(gradient_rgb(width, height)), "JPEG", exif=exif.tobytes())


def encode_video(
    frames: list[np.ndarray], path: Path, codec: str = "libx264", fps: int = 12, rotation: int = 0
) -> Path:
    """Write RGB frames (even sizes) to ``path``; the container follows the suffix.

    ``rotation`` (degrees counter-clockwise) goes into the display matrix, as phones record
    portrait video: stored sideways, shown upright.
    """
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


class _Pipe(io.RawIOBase):
    """A write-only, unseekable byte sink: what a muxer streaming to a socket or stdout sees."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, chunk) -> int:
        self.data += bytes(chunk)
        return len(chunk)


def encode_live_webm(frames: list[np.ndarray], path: Path, fps: int = 12) -> Path:
    """A VP8 webm muxed as a live stream (browsers' MediaRecorder, ffmpeg to a pipe): the muxer
    cannot seek back, so the file records no duration and no frame count."""
    height, width = frames[0].shape[:2]
    pipe = _Pipe()
    with av.open(pipe, mode="w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    path.write_bytes(pipe.data)
    return path


def encode_mjpeg_avi(frames: list[np.ndarray], path: Path, fps: int = 12) -> Path:
    """An AVI of JPEG frames, each at its own size: a stream whose resolution changes midway."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        for index, frame in enumerate(frames):
            packet = av.Packet(encode_image(Image.fromarray(frame), "JPEG", quality=90))
            packet.stream, packet.pts, packet.dts = stream, index, index
            container.mux(packet)
    return path


def davis_frames(sequence: str = "bear", count: int = 6) -> list[np.ndarray]:
    """The first ``count`` DAVIS 2016 frames of ``sequence``, cropped to even sizes."""
    paths = sorted((DAVIS_FRAMES / sequence).glob("*.jpg"))[:count]
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    return [f[: f.shape[0] // 2 * 2, : f.shape[1] // 2 * 2] for f in frames]


def undecodable_video(path: Path) -> Path:
    """An AVI whose codec FFmpeg has no decoder for: an MJPEG clip with its fourcc changed to ``ZZZZ``."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="avi") as container:
        stream = container.add_stream("mjpeg", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        for _ in range(4):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(gradient_rgb(64, 48), format="rgb24")))
        container.mux(stream.encode())
    data = buffer.getvalue()
    assert data.count(b"MJPG") == 2, "the AVI stream header and format should each name the codec once"
    path.write_bytes(data.replace(b"MJPG", b"ZZZZ"))
    return path
