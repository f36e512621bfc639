"""Single-image segmentation with the exported ONNX model.

One onnxruntime session is created at startup and shared by all requests
(``InferenceSession.run`` is thread-safe). Preprocessing, merging and the
masks at each image's size come from ``models/`` (models/inference.py) so the
service computes exactly what training and evaluation compute; only the
network itself runs in onnxruntime.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from models.inference import masks_at_sizes, region_scores
from models.merge_strategy import MergeStrategy
from models.merging import foreground_probability
from models.preprocessing import indices_by_size, prepare_image
from models.refinement import refinement_guide
from models.spec import ModelSpec

logger = logging.getLogger(__name__)

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class ModelInfo:
    """What the service reports about the loaded model (``/readyz``)."""

    path: str
    version: str
    architecture: str
    input_size: tuple[int, int]
    keep_aspect: bool  # photos fed in their own aspect ratio at input_size's pixel count
    video_input_size: tuple[int, int]  # video jobs feed every frame at this size (ModelSpec.video_size)
    num_regions: int
    merge: MergeStrategy  # of the images this segmenter segments (/segment); video frames: service.jobs
    providers: list[str]


@dataclass(frozen=True)
class Segmentation:
    """Foreground mask at the image's resolution and, if asked, per-region soft scores."""

    mask: np.ndarray
    regions: list[dict[str, float]] | None = None


def choose_providers(device: str, available: list[str]) -> list[str]:
    """Execution providers for ``device`` (auto|cpu|cuda); CUDA falls back to CPU per-op."""
    if device == "cpu":
        return [_CPU]
    if _CUDA in available:
        return [_CUDA, _CPU]
    if device == "cuda":
        raise RuntimeError(f"GWM_DEVICE=cuda but onnxruntime offers only {available}")
    return [_CPU]


class OnnxSegmenter:
    """The gwm network in onnxruntime plus the shared pre- and post-processing."""

    def __init__(self, model_path: Path, device: str = "auto", merge: MergeStrategy | str | None = None) -> None:
        providers = choose_providers(device, ort.get_available_providers())
        options = ort.SessionOptions()
        # Idle ORT threads otherwise busy-wait after each run and starve the PyTorch merging step
        # that follows on the same cores (measured: +70 % latency on 2 CPUs).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
        self.spec = ModelSpec.from_onnx_metadata(self._session.get_modelmeta().custom_metadata_map)
        self.info = ModelInfo(
            path=str(model_path),
            version=self.spec.version,
            architecture=self.spec.architecture,
            input_size=self.spec.input_size,
            keep_aspect=self.spec.keep_aspect,
            video_input_size=self.spec.video_size,
            num_regions=self.spec.num_regions,
            merge=MergeStrategy(merge) if merge else self.spec.merge,
            providers=self._session.get_providers(),
        )
        logger.info("loaded %s (%s, %s merge) with providers %s", model_path, self.info.version, self.info.merge,
                    self.info.providers)

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """Network input (3, h, w) for one RGB uint8 image, with the model's own normalisation, at the
        size the model takes that image at (its own aspect ratio where the model keeps it)."""
        return prepare_image(rgb, self.spec.input_size_for(rgb.shape[:2]), self.spec.mean, self.spec.std)

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw network outputs ``(logits, features)`` for a prepared batch (B, 3, h, w)."""
        logits, features = self._session.run(["logits", "features"], {"image": batch})
        return logits, features

    def segment(self, images: list[np.ndarray], with_regions: bool = False, refine: bool = False) -> list[Segmentation]:
        """Segment RGB uint8 images (any sizes) in one batch; masks come back at each image's size,
        snapped to the image's edges with ``refine``."""
        prepared = [self.prepare(rgb) for rgb in images]
        guides = [refinement_guide(rgb) for rgb in images] if refine else None
        return list(self.segment_prepared(prepared, [rgb.shape[:2] for rgb in images], with_regions, guides))

    def segment_prepared(
        self,
        prepared: Sequence[np.ndarray],
        sizes: Sequence[tuple[int, int]],
        with_regions: bool = False,
        guides: Sequence[np.ndarray | None] | None = None,
    ) -> Iterator[Segmentation]:
        """Segment prepared images (each (3, h, w), from :meth:`prepare`); yields each mask at its
        (height, width) in ``sizes``, in order.

        One network run per input size among them (photos of one shape share it), then one
        full-resolution mask at a time: a caller that encodes and drops each mask before the next holds
        one full-size float copy at most. ``guides`` (one per image, from
        :func:`models.refinement.refinement_guide`) snap each mask to its image's edges.
        """
        logits: list[torch.Tensor] = [torch.empty(0)] * len(prepared)
        soft: list[torch.Tensor] = [torch.empty(0)] * len(prepared)
        for indices in indices_by_size([image.shape for image in prepared]).values():
            logits_np, features_np = self.forward(np.stack([prepared[i] for i in indices]))
            group_logits = torch.from_numpy(logits_np)
            group_soft = foreground_probability(group_logits, torch.from_numpy(features_np), self.info.merge)
            for j, i in enumerate(indices):
                logits[i], soft[i] = group_logits[j], group_soft[j]
        for i, mask in enumerate(masks_at_sizes(soft, sizes, guides or None)):
            regions = region_scores(logits[i], soft[i]) if with_regions else None
            yield Segmentation(mask=mask, regions=regions)

