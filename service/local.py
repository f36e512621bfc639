"""``gwm segment``: the service's image and video pipelines on local files, without a server.

Images take the path of ``POST /segment``: :func:`service.imaging.decode_image`, the onnxruntime
model of :mod:`service.inference`, the encoders of :mod:`service.encoding`. Videos take the path of
``POST /adapt-and-segment``: :func:`service.video.probe_video`, then :func:`service.jobs.run_video_job`,
the job function a worker runs. Only where the results go differs: files beside the inputs (or
under ``-o``) instead of HTTP responses, and JSON on stdout.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from service import encoding, rle
from service.errors import ServiceError
from service.imaging import looks_like_video
from service.settings import Settings

if TYPE_CHECKING:
    from service.schemas import JobProgress

logger = logging.getLogger(__name__)


class Kind(StrEnum):
    """Which pipeline a file takes."""

    image = "image"
    video = "video"


class OutputFormat(StrEnum):
    """What ``gwm segment`` writes; ``mask`` and ``json`` fit both kinds, the others one each."""

    mask = "mask"
    overlay = "overlay"
    video = "video"
    json = "json"


#: File name suffix of each (kind, format) result, e.g. photo.jpg -> photo.mask.png.
SUFFIXES: dict[tuple[Kind, OutputFormat], str] = {
    (Kind.image, OutputFormat.mask): ".mask.png",
    (Kind.image, OutputFormat.overlay): ".overlay.jpg",
    (Kind.video, OutputFormat.mask): ".masks.zip",
    (Kind.video, OutputFormat.video): ".mask.mp4",
}


#: Names of the containers the service decodes as video (for files whose contents cannot be read).
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".webm", ".mov", ".mkv", ".avi"})


@dataclass(frozen=True)
class Job:
    """One input file and where its result goes (None: into the JSON document)."""

    source: Path
    kind: Kind
    target: Path | None


@dataclass
class Outcome:
    """What a run produced: files written, JSON documents (for ``json``), and how many inputs failed."""

    written: list[Path] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    failures: int = 0


@dataclass(frozen=True)
class VideoOptions:
    """The options of ``POST /adapt-and-segment``."""

    steps: int
    stride: int
    max_frames: int


def kind_of(path: Path) -> Kind:
    """Video for the containers the service decodes as video and for animated GIFs; image otherwise.

    A still GIF is an image (``/segment`` reads it); an animated one is a video, as on the web page.
    A file that cannot be read is judged by its name: its pipeline then reports what stops it.
    """
    try:
        with path.open("rb") as file:
            head = file.read(16)
    except OSError:
        return Kind.video if path.suffix.lower() in VIDEO_SUFFIXES else Kind.image
    if looks_like_video(head):
        return Kind.video
    if head.startswith(b"GIF8"):
        try:
            with Image.open(path) as gif:
                return Kind.video if getattr(gif, "n_frames", 1) > 1 else Kind.image
        except OSError:  # a damaged GIF: the image decoder says what is wrong with it
            return Kind.image
    return Kind.image


def expand(patterns: Iterable[str]) -> list[Path]:
    """Paths named directly or by glob patterns (``**`` recurses), in order and without repeats.

    Shells expand globs themselves; this covers quoted patterns and shells that do not.
    """
    paths: dict[Path, None] = {}
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(Path(match) for match in glob.glob(pattern, recursive=True) if Path(match).is_file())
            if not matches:
                raise FileNotFoundError(f"no file matches {pattern!r}")
        else:
            path = Path(pattern)
            if not path.is_file():
                raise FileNotFoundError(f"no such file: {pattern}")
            matches = [path]
        paths.update(dict.fromkeys(matches))
    return list(paths)


def plan(sources: list[Path], format: OutputFormat, output: str | None) -> list[Job]:
    """Decide each input's pipeline and output file; refuse before any work what cannot be done.

    ``output`` is the file to write for a single input, or a folder (created) for several inputs,
    an existing folder or a name ending in ``/``; without it, results go beside their inputs.
    ``json`` results are documents, not files (the caller writes them).
    """
    jobs = []
    folder = Path(output) if output else None
    into_folder = folder is not None and (len(sources) > 1 or folder.is_dir() or output.endswith(("/", os.sep)))
    for source in sources:
        kind = kind_of(source)
        if format is OutputFormat.json:
            jobs.append(Job(source, kind, None))
            continue
        suffix = SUFFIXES.get((kind, format))
        if suffix is None:
            fits = "images" if format is OutputFormat.overlay else "videos"
            raise ValueError(f"--format {format} is for {fits}; {source} is {'an' if kind is Kind.image else 'a'} {kind}")
        name = source.name.removesuffix(source.suffix) + suffix
        target = folder / name if into_folder else folder or source.with_name(name)
        jobs.append(Job(source, kind, target))
    inputs = {source.resolve() for source in sources}
    if clash := next((job.target for job in jobs if job.target and job.target.resolve() in inputs), None):
        raise ValueError(f"refusing to overwrite the input {clash}")
    return jobs


def segment_files(
    jobs: list[Job],
    settings: Settings,
    format: OutputFormat,
    video: VideoOptions,
    regions: bool = False,
    progress: bool = True,
) -> Outcome:
    """Run every job, images first (one model load), then each video; a failed file is logged and
    counted, and the others go on."""
    outcome = Outcome()
    with logging_redirect_tqdm():  # log lines above the progress bars, not through them
        if images := [job for job in jobs if job.kind is Kind.image]:
            _segment_images(images, settings, format, regions, outcome, progress)
        for job in jobs:
            if job.kind is Kind.video:
                _segment_video(job, settings, format, video, outcome, progress)
    return outcome


def _segment_images(
    jobs: list[Job], settings: Settings, format: OutputFormat, regions: bool, outcome: Outcome, progress: bool
) -> None:
    from service.imaging import decode_image
    from service.inference import OnnxSegmenter

    segmenter = OnnxSegmenter(settings.model_path, settings.device, settings.image_merge)
    for job in tqdm(jobs, desc="images", unit="image", disable=not progress or len(jobs) == 1):
        try:
            with job.source.open("rb") as file:
                rgb = decode_image(file, settings.max_image_pixels)
        except (ServiceError, OSError) as error:
            _failed(job, error, outcome)
            continue
        result = segmenter.segment([rgb], with_regions=regions and format is OutputFormat.json,
                                   refine=settings.refine)[0]
        if format is OutputFormat.json:
            outcome.documents.append({"filename": str(job.source), **encoding.mask_summary(result.mask, result.regions)})
        elif format is OutputFormat.overlay:
            _write(job, encoding.overlay_jpeg(rgb, result.mask), outcome)
        else:
            _write(job, encoding.mask_png(result.mask), outcome)


def _segment_video(
    job: Job, settings: Settings, format: OutputFormat, options: VideoOptions, outcome: Outcome, progress: bool
) -> None:
    from service.jobs import VideoJobRequest, WorkerConfig, run_video_job
    from service.video import VideoLimits, probe_video

    limits = VideoLimits(settings.max_video_frames, settings.max_video_seconds, settings.max_video_side)
    bars = StageBars(job.source.name, enabled=progress)
    try:
        probe_video(job.source, limits)
        request = VideoJobRequest(video_path=str(job.source), steps=options.steps, stride=options.stride,
                                  max_frames=options.max_frames, limits=limits, result_format=format.value,
                                  refine=settings.refine, temporal=settings.temporal)
        config = replace(WorkerConfig.from_settings(settings), timeout_seconds=None)  # the timeout is a server's limit
        result = run_video_job(request, config, bars.report, lambda: False)
    except (ServiceError, OSError) as error:
        _failed(job, error, outcome)
        return
    finally:
        bars.close()
    if format is OutputFormat.json:
        outcome.documents.append({"filename": str(job.source), **result})
        return
    masks = (rle.decode(item) for item in result["masks"])  # one full-size mask at a time
    if format is OutputFormat.video:
        _write(job, encoding.mask_video_mp4(masks, result["fps"]), outcome)
    else:
        _write(job, encoding.masks_zip(result["frame_indices"], masks), outcome)


class StageBars:
    """One progress bar per stage of a video job (decoding, flow, adapting, segmenting, encoding)."""

    def __init__(self, name: str, enabled: bool) -> None:
        self._name = name
        self._enabled = enabled
        self._stage: str | None = None
        self._bar: tqdm | None = None

    def report(self, progress: JobProgress) -> None:
        """The job's progress callback."""
        if progress.stage != self._stage:
            self.close()
            self._stage = progress.stage
            self._bar = tqdm(desc=f"{self._name} {progress.stage:<10}", total=progress.total,
                             disable=not self._enabled)
        assert self._bar is not None
        self._bar.total = progress.total
        self._bar.update(progress.current - self._bar.n)

    def close(self) -> None:
        """End the current stage's bar at what it reached (decoding stops before its upper bound)."""
        if self._bar is not None:
            self._bar.total = self._bar.n
            self._bar.refresh()
            self._bar.close()
            self._bar = None


def _write(job: Job, content: bytes, outcome: Outcome) -> None:
    assert job.target is not None, "json results are documents, not files"
    job.target.parent.mkdir(parents=True, exist_ok=True)
    job.target.write_bytes(content)
    outcome.written.append(job.target)


def _failed(job: Job, error: ServiceError | OSError, outcome: Outcome) -> None:
    """Report a file that could not be segmented (a bad input, or one that cannot be read) and count it."""
    message = error.message if isinstance(error, ServiceError) else f"cannot read the file: {error.strerror or error}"
    logger.error("%s: %s", job.source, message)
    outcome.failures += 1
