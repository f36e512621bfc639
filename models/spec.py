"""What a trained network is: the description stored with its weights in checkpoints and ONNX files.

A :class:`ModelSpec` holds everything needed to rebuild the network (architecture and its constructor
options) and to use it as it was trained and measured (input size, normalisation, merge strategy),
plus the model's version. Checkpoints store it as a plain dict (:meth:`ModelSpec.to_dict`), so they
still load with ``torch.load(weights_only=True)``; ONNX files store it as ``gwm.*`` metadata
(:meth:`ModelSpec.to_onnx_metadata`), where a server reads it without PyTorch's model code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .merge_strategy import PAPER_MERGE, MergeStrategy
from .preprocessing import DEFAULT_INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD, network_input_size

__all__ = ["ModelSpec"]

#: The ONNX metadata key holding the whole spec as JSON; the other ``gwm.*`` keys are flat copies of
#: single fields for tools (and people) that read ONNX metadata without knowing this class.
_SPEC_KEY = "gwm.spec"


def _int_pair(size: Any) -> tuple[int, int]:
    """(height, width) as ints, from the list or tuple a file or a caller hands over."""
    return int(size[0]), int(size[1])


@dataclass(frozen=True)
class ModelSpec:
    """The description of one model.

    Attributes:
        architecture: segmenter name in :data:`models.segmenters.ARCHITECTURES`.
        options: keyword arguments of that segmenter's constructor (``num_regions``, ``width``, ...);
            JSON values only, since ONNX metadata stores them as JSON.
        input_size: (height, width) the network is fed (with ``keep_aspect``: the pixel count it is
            fed, in each image's own aspect ratio; see :meth:`input_size_for`).
        mean, std: per-channel normalisation of the input.
        version: the model's version (``dev`` for unshipped runs).
        merge: the foreground merge the model was measured with. It belongs to the model because it
            depends on how good the model's own features are; specs written before gwm 0.1.1 record
            none and get the paper's, which those models used.
        keep_aspect: feed each photo in its own aspect ratio (:func:`~models.preprocessing.network_input_size`)
            instead of stretched to ``input_size``. Only for networks that take any input size (the
            U-Net; its ONNX export then has dynamic height and width); specs written before gwm 0.4.1
            record none and get the stretch their static ONNX graphs need. Video frames are fed at
            :attr:`video_size` either way: test-time adaptation measured better on them stretched
            (training/adapt.py).
        video_input_size: (height, width) video jobs feed every frame at, to adapt and to segment;
            ``None`` (every spec before gwm 0.5.1): ``input_size``. Set when single images segment best
            at another size than the network was trained at: a fully convolutional network fed a
            smaller grid sees objects smaller against its receptive field, which on unseen photos and
            frames helped model 0.5.0 (fed 112×192, trained at 128×224), while test-time adaptation,
            which trains the network further, did better at the size it was trained at (README, Model
            card).
    """

    architecture: str
    options: Mapping[str, Any] = field(default_factory=dict)
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    version: str = "dev"
    merge: MergeStrategy = PAPER_MERGE
    keep_aspect: bool = False
    video_input_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        # Normalise what JSON and torch.load hand back (lists, plain strings) so that a spec read
        # from a file equals the one that was written.
        object.__setattr__(self, "options", dict(self.options))
        object.__setattr__(self, "input_size", _int_pair(self.input_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "merge", MergeStrategy(self.merge))
        object.__setattr__(self, "keep_aspect", bool(self.keep_aspect))
        if self.video_input_size is not None:
            object.__setattr__(self, "video_input_size", _int_pair(self.video_input_size))

    @property
    def num_regions(self) -> int:
        """K, the number of regions the network predicts."""
        return int(self.options["num_regions"])

    @property
    def video_size(self) -> tuple[int, int]:
        """The (height, width) video jobs feed every frame at (``video_input_size``, else ``input_size``)."""
        return self.video_input_size or self.input_size

    def input_size_for(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The (height, width) a photo of ``image_size`` = (H, W) is fed at (video frames: :attr:`video_size`)."""
        return network_input_size(image_size, self.input_size, self.keep_aspect)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (lists, not tuples; the merge's name), as checkpoints store the spec."""
        return {
            "architecture": self.architecture,
            "options": dict(self.options),
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "version": self.version,
            "merge": self.merge.value,
            "keep_aspect": self.keep_aspect,
            "video_input_size": None if self.video_input_size is None else list(self.video_input_size),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """The spec of a checkpoint or of ``gwm.spec`` metadata, from any gwm version."""
        return cls(**data)

    def to_onnx_metadata(self) -> dict[str, str]:
        """``gwm.*`` ONNX metadata: the whole spec under ``gwm.spec`` and flat copies of its fields."""
        height, width = self.input_size
        return {
            "gwm.input_height": str(height),
            "gwm.input_width": str(width),
            "gwm.mean": json.dumps(list(self.mean)),
            "gwm.std": json.dumps(list(self.std)),
            "gwm.num_regions": str(self.num_regions),
            "gwm.model_version": self.version,
            "gwm.architecture": self.architecture,
            "gwm.merge": self.merge.value,
            "gwm.keep_aspect": json.dumps(self.keep_aspect),
            _SPEC_KEY: json.dumps(self.to_dict()),
        }

    @classmethod
    def from_onnx_metadata(cls, metadata: Mapping[str, str]) -> ModelSpec:
        """The spec of an exported model from its metadata (every gwm export records ``gwm.spec``)."""
        if _SPEC_KEY not in metadata:
            raise ValueError(f"no {_SPEC_KEY} in the ONNX metadata: not a model exported by gwm")
        return cls.from_dict(json.loads(metadata[_SPEC_KEY]))
