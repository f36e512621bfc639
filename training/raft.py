"""RAFT optical flow (Teed & Deng 2020), the paper's flow, on torchvision's implementation.

The weights come from a local file the user names (nothing is downloaded). Two formats load:

- the authors' official release (``raft-small.pth`` / ``raft-things.pth`` from their ``models.zip``):
  a state dict saved from ``nn.DataParallel`` with the authors' module names (``module.fnet.*``,
  ``module.update_block.gru.*`` …), translated here name by name onto torchvision's model;
- a state dict of torchvision's own ``raft_small`` / ``raft_large``.

Either way the load is strict: every tensor must find its place and every place must be filled, so a
wrong or truncated file fails loudly instead of producing plausible-looking noise.

RAFT's correlation volume lives at 1/8 of the input resolution, so thin or small objects (legs, a
distant car) vanish on 240p frames; ``scale`` upsamples the frames before estimation (and the flow
is returned on the original grid, in its pixels).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .flow import DEFAULT_RAFT_ITERATIONS, DEFAULT_RAFT_SCALE

__all__ = ["RAFTFlow", "load_raft", "translate_official_raft"]

log = logging.getLogger(__name__)

#: (pattern, replacement) applied in order to the authors' names after ``module.`` is stripped.
_OFFICIAL_TO_TORCHVISION: tuple[tuple[str, str], ...] = (
    (r"^fnet\.", "feature_encoder."),
    (r"^cnet\.", "context_encoder."),
    (r"^(feature_encoder|context_encoder)\.conv1\.", r"\1.convnormrelu.0."),
    (r"^(feature_encoder|context_encoder)\.conv2\.", r"\1.conv."),
    (r"^(feature_encoder|context_encoder)\.(layer\d\.\d)\.conv(\d)\.", r"\1.\2.convnormrelu\3.0."),
    (r"^(feature_encoder|context_encoder)\.(layer\d\.\d)\.norm(\d)\.", r"\1.\2.convnormrelu\3.1."),
    (r"^(feature_encoder|context_encoder)\.norm1\.", r"\1.convnormrelu.1."),
    (r"^update_block\.encoder\.convc(\d)\.", r"update_block.motion_encoder.convcorr\1.0."),
    (r"^update_block\.encoder\.convf(\d)\.", r"update_block.motion_encoder.convflow\1.0."),
    (r"^update_block\.encoder\.conv\.", "update_block.motion_encoder.conv.0."),
    (r"^update_block\.gru\.conv([zrq])(\d)\.", r"update_block.recurrent_block.convgru\2.conv\1."),
    (r"^update_block\.gru\.conv([zrq])\.", r"update_block.recurrent_block.convgru1.conv\1."),
    (r"^update_block\.mask\.0\.", "mask_predictor.convrelu.0."),
    (r"^update_block\.mask\.2\.", "mask_predictor.conv."),
)


def translate_official_raft(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the authors' RAFT state dict onto torchvision's module names (see module docstring)."""
    translated = {}
    for name, tensor in state.items():
        key = name.removeprefix("module.")
        for pattern, replacement in _OFFICIAL_TO_TORCHVISION:
            key = re.sub(pattern, replacement, key)
        translated[key] = tensor
    return translated


def _is_official(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.removeprefix("module.").startswith(("fnet.", "cnet.")) for k in state)


def load_raft(weights: str | Path, small: bool | None = None) -> torch.nn.Module:
    """torchvision's RAFT with ``weights`` loaded strictly; ``small=None`` infers the size.

    RAFT-small's context encoder ends in 160 channels (96 hidden + 64 context), RAFT-large's in 256.
    """
    from torchvision.models.optical_flow import raft_large, raft_small

    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"RAFT weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if _is_official(state):
        state = translate_official_raft(state)
    if small is None:
        context = state.get("context_encoder.conv.weight")
        if context is None:
            raise ValueError(f"{path} does not look like RAFT weights (no context encoder)")
        small = context.shape[0] == 160
    model = (raft_small if small else raft_large)(weights=None, progress=False)
    model.load_state_dict(state, strict=True)
    return model.eval()


class RAFTFlow:
    """A :class:`training.flow.FlowEstimator` backed by RAFT.

    Args:
        weights: local weights file (official or torchvision format).
        small: RAFT-small (``True``), RAFT-large (``False``) or inferred from the file (``None``).
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA when available); ``cuda`` without a GPU falls back
            to the CPU with a warning, so a GPU worker's settings still run on a CPU machine.
        iterations: GRU refinement iterations.
        scale: frames are resized by this factor before estimation (2.0 on 240p frames recovers thin
            structures); the flow comes back on the input grid in input pixels.
    """

    def __init__(
        self,
        weights: str | Path,
        small: bool | None = None,
        device: str = "cpu",
        iterations: int = DEFAULT_RAFT_ITERATIONS,
        scale: float = DEFAULT_RAFT_SCALE,
    ) -> None:
        if iterations < 1:
            raise ValueError("RAFT needs at least one iteration")
        if scale <= 0:
            raise ValueError("the RAFT scale must be positive")
        if device == "auto" or (device.startswith("cuda") and not torch.cuda.is_available()):
            if device != "auto":
                log.warning("CUDA requested for RAFT but not available; using the CPU")
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.iterations = iterations
        self.scale = scale
        self.model = load_raft(weights, small).to(self.device)

    def _tensor(self, rgb: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        t = torch.tensor(rgb, dtype=torch.float32, device=self.device).permute(2, 0, 1)[None]
        if tuple(t.shape[-2:]) != size:
            t = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=size[0] < t.shape[-2])
        t = t.div(127.5).sub(1.0)
        pad_h, pad_w = (-size[0]) % 8, (-size[1]) % 8
        return F.pad(t, (0, pad_w, 0, pad_h), mode="replicate")

    def __call__(self, frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
        height, width = frame_a.shape[:2]
        size = (max(8, round(height * self.scale)), max(8, round(width * self.scale)))
        with torch.inference_mode():
            flow = self.model(self._tensor(frame_a, size), self._tensor(frame_b, size),
                              num_flow_updates=self.iterations)[-1]
            flow = flow[:, :, :size[0], :size[1]]
            if size != (height, width):
                flow = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
                flow = flow * flow.new_tensor([width / size[1], height / size[0]]).view(1, 2, 1, 1)
        return flow[0].permute(1, 2, 0).cpu().numpy().astype(np.float32)
