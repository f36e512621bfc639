"""Probing and decoding of uploaded videos with PyAV, within configured limits.

The API probes a video while the client waits, so "not a video", audio-only
files, too-long, too-large and too-small videos are rejected with a 4xx instead
of a failed job; the job decodes the frames later, which is where corrupt
streams and empty videos are found.

Decoded frames all have the first frame's size, turned the way the video is
displayed: a stream that changes resolution midway is resized to its first
frame's, and the rotation a phone records in the display matrix is applied,
so every mask of a job has one size, the one people see.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from service.errors import BadInput, TooLarge, UnsupportedMedia
from service.imaging import looks_like_video

# FFmpeg demuxer names of the accepted containers: mp4/mov, mkv/webm, avi, GIF.
ACCEPTED_DEMUXERS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi", "gif"})
_IMAGE_DEMUXER_SUFFIX = "_pipe"  # e.g. jpeg_pipe, png_pipe: a still image
#: Shortest side a video may have: OpenCV's DIS flow fails inside its pyramid below 12 px.
MIN_SIDE = 16


@dataclass(frozen=True)
class VideoLimits:
    """Bounds on what a job may decode; plain data so it travels in RQ job arguments."""

    max_frames: int
    max_seconds: float
    max_side: int


@dataclass(frozen=True)
class VideoInfo:
    """What the container header says about the video stream."""

    width: int
    height: int
    fps: float
    duration_s: float | None


@dataclass(frozen=True)
class DecodedVideo:
    """Selected frames and the source index of each (kept for naming result files)."""

    frames: list[np.ndarray]
    indices: list[int]
    fps: float


def probe_video(path: Path, limits: VideoLimits) -> VideoInfo:
    """Check a file is an accepted, non-empty video within limits, without decoding it."""
    with _open(path) as container:
        stream = _video_stream(container)
        info = VideoInfo(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=_frame_rate(stream),
            duration_s=_duration_s(container, stream),
        )
    _check_size(info.width, info.height, limits)
    if info.duration_s is not None and info.duration_s > limits.max_seconds:
        raise TooLarge(f"video lasts {info.duration_s:.1f} s; the limit is {limits.max_seconds:g} s")
    return info


def decode_frames(
    path: Path,
    limits: VideoLimits,
    stride: int = 1,
    max_frames: int | None = None,
    on_frame: Callable[[int, int], None] | None = None,
) -> DecodedVideo:
    """Decode every ``stride``-th frame as RGB uint8, stopping after ``max_frames`` frames.

    Every frame comes back at the first kept frame's size, rotated as the video is displayed.
    ``on_frame(done, total)`` is called before the first frame and after each kept frame so callers
    can report progress (and raise to stop); ``total`` is the number of frames this call will keep,
    from the container's frame count (:func:`expected_frames`), never below ``done``, and equal to it
    in the last call.

    ``limits.max_seconds`` holds here too, by the frames' own timestamps: a stream whose header
    records no duration (a webm written as a live stream) passed :func:`probe_video` unmeasured, and
    with a stride it could otherwise keep a worker decoding ``stride`` × ``max_frames`` frames.
    """
    wanted = min(max_frames or limits.max_frames, limits.max_frames)
    frames: list[np.ndarray] = []
    indices: list[int] = []
    geometry: tuple[int, int, int] | None = None  # (width, height, quarter turns) of the first frame
    first_time: float | None = None  # presentation time of the first frame, seconds
    with _open(path) as container:
        stream = _video_stream(container)
        fps = _frame_rate(stream)
        expected = expected_frames(container, stream, stride, wanted)
        if on_frame is not None:
            on_frame(0, expected)
        try:
            for index, frame in enumerate(container.decode(stream)):
                _check_elapsed(frame, first_time, limits)
                first_time = frame.time if first_time is None else first_time
                if index % stride:
                    continue
                _check_size(frame.width, frame.height, limits, check_min=geometry is None)
                if geometry is None:
                    geometry = (frame.width, frame.height, round(frame.rotation / 90) % 4)
                width, height, quarter_turns = geometry
                rgb = frame.to_ndarray(format="rgb24", width=width, height=height)  # scales only if it changed
                frames.append(np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb)
                indices.append(index)
                if on_frame is not None:
                    on_frame(len(frames), max(expected, len(frames)))
                if len(frames) >= wanted:
                    break
        except av.FFmpegError as exc:
            raise BadInput(f"video stream is corrupt after {len(frames)} frames: {exc}") from exc
    if not frames:
        raise BadInput("the video has no decodable frames")
    if on_frame is not None and len(frames) < expected:  # the header promised more than the stream held
        on_frame(len(frames), len(frames))
    return DecodedVideo(frames=frames, indices=indices, fps=fps / stride)


def _check_elapsed(frame: av.VideoFrame, first_time: float | None, limits: VideoLimits) -> None:
    """Reject the video once a frame is shown later than ``max_seconds`` after the first one."""
    if frame.time is not None and first_time is not None and frame.time - first_time > limits.max_seconds:
        raise TooLarge(f"video lasts more than {limits.max_seconds:g} s, the limit")


def expected_frames(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, stride: int, wanted: int
) -> int:
    """How many frames decoding every ``stride``-th frame, up to ``wanted``, will keep.

    From the stream's frame count where the container records one (mp4, avi, GIF), else from its
    duration times its frame rate (mkv/webm record no count); ``wanted`` when neither is known.
    """
    count = stream.frames
    if not count:
        duration = _duration_s(container, stream)
        rate = stream.average_rate or stream.guessed_rate
        count = round(duration * float(rate)) if duration and rate else 0
    return min(wanted, math.ceil(count / stride)) if count > 0 else wanted


def _open(path: Path) -> av.container.InputContainer:
    if path.stat().st_size == 0:
        raise BadInput("the uploaded file is empty")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        # An mp4 cut short loses its index (written last) and FFmpeg cannot open it at all;
        # when the container signature is there, "truncated" is the truth, not "unknown format".
        with path.open("rb") as head:
            if looks_like_video(head.read(16)):
                raise BadInput("the video file is truncated or corrupt: its container cannot be read") from exc
        raise UnsupportedMedia("not a recognised video (supported: mp4, webm, mov, mkv, avi, GIF)") from exc
    name = container.format.name
    if name not in ACCEPTED_DEMUXERS:
        container.close()
        if name.endswith(_IMAGE_DEMUXER_SUFFIX) or name.startswith("image2"):
            raise UnsupportedMedia("this is a still image; post images to /segment")
        raise UnsupportedMedia(f"container {name!r} is not supported (supported: mp4, webm, mov, mkv, avi, GIF)")
    return container


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kind = "an audio-only file" if container.streams.audio else "a file without streams"
        raise UnsupportedMedia(f"this is {kind}; a video stream is required")
    stream = container.streams.video[0]
    if stream.codec_context is None:  # FFmpeg knows the container but has no decoder for the codec
        raise UnsupportedMedia("the video's codec cannot be decoded here (H.264, HEVC, VP8, VP9, AV1 and MJPEG can)")
    return stream


def _frame_rate(stream: av.video.stream.VideoStream) -> float:
    """Frames per second from the header; 25 where it records none."""
    return float(stream.average_rate or stream.guessed_rate or 25)


def _duration_s(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _check_size(width: int, height: int, limits: VideoLimits, check_min: bool = True) -> None:
    """Reject sizes outside the limits; ``check_min=False`` for frames that will be scaled to the first's size."""
    if width <= 0 or height <= 0:
        raise BadInput("video stream has no frame size")
    if max(width, height) > limits.max_side:
        raise TooLarge(f"video is {width}x{height}; the longest side may be at most {limits.max_side} px")
    if check_min and min(width, height) < MIN_SIDE:
        raise BadInput(f"video is {width}x{height}; the shortest side must be at least {MIN_SIDE} px")
