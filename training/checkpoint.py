"""Saving and loading models and training state.

Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``: a checkpoint file can never execute code.

A *model* checkpoint carries the weights and the model config (architecture, K, width, input size,
normalisation, version), which is everything needed to rebuild the network. A *training* checkpoint
adds the optimiser, the step and the sampler's RNG state, so a run resumes exactly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from models.merging import MERGE_STRATEGIES, PAPER_MERGE
from models.preprocessing import DEFAULT_INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD
from models.segmenters import Segmenter, build_segmenter

__all__ = ["ModelSpec", "model_spec", "merge_strategy", "save_checkpoint", "load_checkpoint", "load_model", "slim_checkpoint"]

ModelSpec = dict[str, Any]


def model_spec(
    architecture: str,
    options: dict[str, Any],
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    version: str = "dev",
    merge: str = PAPER_MERGE,
) -> ModelSpec:
    """The description stored with every checkpoint and exported ONNX file.

    ``merge`` is the foreground merge strategy the model was measured with (see models/merging.py):
    it belongs to the model because it depends on how good the model's own features are.
    """
    if merge not in MERGE_STRATEGIES:
        raise ValueError(f"unknown merge strategy {merge!r}; choose from {MERGE_STRATEGIES}")
    return {
        "architecture": architecture,
        "options": dict(options),
        "input_size": list(input_size),
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "version": version,
        "merge": merge,
    }


def merge_strategy(spec: ModelSpec) -> str:
    """The model's merge strategy; older checkpoints record none and used the paper's."""
    return spec.get("merge", PAPER_MERGE)


def save_checkpoint(path: str | Path, model: Segmenter, spec: ModelSpec, **state: Any) -> None:
    """Write ``{"model", "spec", **state}`` atomically (a crash never leaves half a checkpoint)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save({"model": model.state_dict(), "spec": spec, **state}, partial)
    os.replace(partial, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (no pickled code) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Segmenter, ModelSpec]:
    """Rebuild the network described by a checkpoint and load its weights (eval mode)."""
    checkpoint = load_checkpoint(path)
    spec = checkpoint["spec"]
    model = build_segmenter(spec["architecture"], **spec["options"])
    model.load_state_dict({k: v.float() for k, v in checkpoint["model"].items()})
    return model.to(device).eval(), spec


def slim_checkpoint(source: str | Path, target: str | Path, half: bool = True, spec: ModelSpec | None = None) -> None:
    """Keep only weights and spec (no optimiser), optionally in float16, for shipping; ``spec``
    replaces the stored one (so the slim checkpoint matches an ONNX exported with a changed spec)."""
    checkpoint = load_checkpoint(source)
    weights = {
        k: (v.half() if half and v.is_floating_point() else v) for k, v in checkpoint["model"].items()
    }
    extra = {k: checkpoint[k] for k in ("step",) if k in checkpoint}
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": weights, "spec": spec or checkpoint["spec"], **extra}, target)
