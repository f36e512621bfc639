"""Saving and loading models and training state.

Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``: a checkpoint file can never execute code.

A *model* checkpoint carries the weights and the model's :class:`~models.spec.ModelSpec` (as a plain
dict), which is everything needed to rebuild the network. A *training* checkpoint adds the
optimiser, the step and the sampler's RNG state, so a run resumes exactly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch

from models.segmenters import Segmenter, UNet, build_segmenter
from models.segmenters.widening import widen_unet
from models.spec import ModelSpec

__all__ = [
    "average_weights",
    "interpolate_checkpoints",
    "interpolate_weights",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
    "slim_checkpoint",
    "widen_checkpoint",
]


def save_checkpoint(path: str | Path, model: Segmenter, spec: ModelSpec, **state: Any) -> None:
    """Write ``{"model", "spec", **state}`` atomically (a crash never leaves half a checkpoint)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save({"model": model.state_dict(), "spec": spec.to_dict(), **state}, partial)
    os.replace(partial, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (no pickled code) onto the CPU; its ``spec`` is the stored dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Segmenter, ModelSpec]:
    """Rebuild the network described by a checkpoint and load its weights (eval mode).

    The network comes in the channels-last memory format, as training runs it: the default U-Net's
    forward pass takes ~1.6x less time so on a CPU (16 frames at 128x224, one thread), which every
    video job, evaluation and bench that loads a checkpoint gains; the weights are the same numbers."""
    checkpoint = load_checkpoint(path)
    spec = ModelSpec.from_dict(checkpoint["spec"])
    model = build_segmenter(spec.architecture, **spec.options)
    model.load_state_dict({k: v.float() for k, v in checkpoint["model"].items()})
    return model.to(device, memory_format=torch.channels_last).eval(), spec


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
    stored_spec = spec.to_dict() if spec is not None else checkpoint["spec"]
    torch.save({"model": weights, "spec": stored_spec, **extra}, target)


def interpolate_weights(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor],
                        alpha: float) -> dict[str, torch.Tensor]:
    """``start + alpha (end − start)`` for every floating-point entry of two state dicts of one network
    (batch-norm running statistics included); integer buffers (batch counters) come from ``end``."""
    return {name: torch.lerp(start[name], value, alpha) if value.is_floating_point() else value
            for name, value in end.items()}


def average_weights(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of state dicts of one network, entry by entry (a model soup, Wortsman et al., ICML 2022):
    floating-point entries are averaged, batch-norm running statistics included; integer buffers
    (batch counters) come from the first."""
    if not states:
        raise ValueError("no weights to average")
    return {name: torch.stack([state[name] for state in states]).mean(dim=0) if value.is_floating_point() else value
            for name, value in states[0].items()}


def interpolate_checkpoints(start: str | Path, end: str | Path | Sequence[str | Path], target: str | Path,
                            alpha: float = 0.5, version: str | None = None) -> ModelSpec:
    """Write ``(1 - alpha) * start + alpha * end``, weight by weight, as a model checkpoint at ``target``.

    Weight-space ensembling of a model and its fine-tuned descendant (WiSE-FT, Wortsman et al., CVPR
    2022): when ``end`` was trained from ``start`` (``gwm train --init-from``) the two lie in one basin,
    and the midpoint often holds what each does best, on data neither trained on. Batch-norm running
    statistics are interpolated like the weights (:func:`interpolate_weights`).

    ``end`` may name several descendants of ``start`` (runs of one recipe with different seeds): they are
    averaged first (:func:`average_weights`, a model soup), so no run is picked by its score; the
    version and spec recorded are the first end's.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    ends = [end] if isinstance(end, (str, Path)) else list(end)
    if not ends:
        raise ValueError("no weights to interpolate towards")
    first, start_spec = load_model(start)
    loaded = [load_model(path) for path in ends]
    for path, (_, other) in zip(ends, loaded):
        if (other.architecture, other.options) != (start_spec.architecture, start_spec.options):
            raise ValueError(f"{start} and {path} are different networks; only the same network interpolates")
    model, spec = loaded[0]
    soup = average_weights([other.state_dict() for other, _ in loaded])
    model.load_state_dict(interpolate_weights(first.state_dict(), soup, alpha))
    spec = spec if version is None else replace(spec, version=version)
    save_checkpoint(target, model, spec)
    return spec


def widen_checkpoint(source: str | Path, target: str | Path, width: int, noise: float = 0.0, seed: int = 0,
                     version: str | None = None) -> ModelSpec:
    """Write ``source``'s U-Net widened to ``width`` (:func:`~models.segmenters.widening.widen_unet`) as a
    model checkpoint at ``target``: the same function in a wider network, to train on with
    ``gwm train --init-from TARGET --width WIDTH`` and, when that run is done, to interpolate with
    (``gwm interpolate TARGET RUN/last.pt``), since only networks of one width interpolate."""
    model, spec = load_model(source)
    if spec.architecture != "unet":
        raise ValueError(f"{source} holds a {spec.architecture!r} network; only a U-Net widens")
    wide = widen_unet(cast(UNet, model), width, noise=noise, seed=seed)
    spec = replace(spec, options={**spec.options, "width": width}, version=version or spec.version)
    save_checkpoint(target, wide, spec)
    return spec
