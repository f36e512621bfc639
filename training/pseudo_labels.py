"""Pseudo-labels for self-training: each training video's masks from a network adapted to that video.

Test-time adaptation (training/adapt.py) fits a copy of the network to one video's flow, and the
video job around it (mask checks, temporal fusion, edge refinement) measured +8 to +9 J on unseen
val-dev videos over the network it starts from. That network segments one frame at a time, without
the flow or the video's other frames, so it cannot reach that J by itself; but the masks the job
makes on the *training* videos can teach it to, as a second target beside the flow loss
(``gwm train --pseudo-labels``; the loss is :func:`models.distillation.subset_distillation_loss`).
No human label is involved: the teacher is the same unsupervised method, given the whole video.

The paper has no such step (it trains on the flow loss alone); it is an explicit option. The masks
are made by :func:`training.adapt.adapt_and_segment`, the code path of ``POST /adapt-and-segment``,
with the service's defaults, and are stored as one PNG per frame (255 = foreground), at the frames'
own size, under ``<output>/<sequence>/<frame file stem>.png``; a sequence whose folder is complete
is skipped, so the command resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .frames import VideoFolder

if TYPE_CHECKING:  # adapt imports the training loop, which imports load_pseudo_labels from here
    from .adapt import AdaptationSettings

__all__ = ["RECORD_NAME", "load_pseudo_labels", "write_pseudo_labels"]

log = logging.getLogger(__name__)

#: What made the masks (teacher checkpoint and its SHA-256, adaptation settings), beside them.
RECORD_NAME = "pseudo-labels.json"


def _label_path(output: Path, video: VideoFolder, index: int) -> Path:
    return output / video.name / f"{Path(video.frames[index]).stem}.png"


def _complete(output: Path, video: VideoFolder) -> bool:
    return all(_label_path(output, video, i).is_file() for i in range(len(video)))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_pseudo_labels(
    videos: Sequence[VideoFolder],
    checkpoint: str | Path,
    output: str | Path,
    settings: AdaptationSettings | None = None,
    refine: bool = True,
    temporal: bool = True,
    progress: bool = True,
) -> Path:
    """Adapt ``checkpoint``'s network to each video and write its masks under ``output``; resumes.

    ``refine`` and ``temporal`` are the job's options (both on by default in the service). Returns
    ``output``. The record (:data:`RECORD_NAME`) must match on a resumed run, so that one folder never
    mixes two teachers.
    """
    from .adapt import AdaptationSettings, adapt_and_segment

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    settings = settings or AdaptationSettings()
    record = {"checkpoint": str(checkpoint), "checkpoint_sha256": _sha256(Path(checkpoint)),
              "settings": asdict(settings), "refine": refine, "temporal": temporal}
    record_path = output / RECORD_NAME
    if record_path.is_file():
        existing = json.loads(record_path.read_text())
        if existing != json.loads(json.dumps(record)):
            raise ValueError(f"{output} holds pseudo-labels made otherwise ({record_path}); use another folder")
    else:
        record_path.write_text(json.dumps(record, indent=2))
    todo = [video for video in videos if not _complete(output, video)]
    log.info("%d of %d sequences to label", len(todo), len(videos))
    for video in tqdm(todo, desc="pseudo-labels", unit="seq", disable=not progress):
        frames = [video.read(i) for i in range(len(video))]
        segmentation = adapt_and_segment(frames, checkpoint, settings, refine=refine, temporal=temporal)
        folder = output / video.name
        folder.mkdir(exist_ok=True)
        for index, mask in enumerate(segmentation.masks):
            Image.fromarray(mask.astype(np.uint8) * 255).save(_label_path(output, video, index))
        if segmentation.adaptation is not None:
            log.info("%s: adaptation %s", video.name, segmentation.adaptation.decision)
    return output


def load_pseudo_labels(videos: Sequence[VideoFolder], directory: str | Path, size: tuple[int, int]) -> torch.Tensor:
    """Every frame's pseudo-label, in the order of ``videos``' frames, as soft masks (N, 1, h, w) float16
    on the grid ``size`` (area-averaged, so a boundary pixel holds the fraction of it that is foreground).
    Raises FileNotFoundError naming the first missing mask."""
    directory = Path(directory)
    masks = []
    for video in videos:
        for index in range(len(video)):
            path = _label_path(directory, video, index)
            if not path.is_file():
                raise FileNotFoundError(f"no pseudo-label {path}; run gwm pseudo-label for these sequences")
            mask = np.asarray(Image.open(path).convert("L"), np.float32) / 255.0
            masks.append(cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_AREA))
    return torch.from_numpy(np.stack(masks)).unsqueeze(1).to(torch.float16)
