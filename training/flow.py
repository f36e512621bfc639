"""Optical flow estimators behind one interface.

GWM only needs flow as a training signal, so any estimator works (paper Table 7 compares several).
Classical methods run anywhere on a CPU; RAFT needs torchvision and a local weights file.

Every estimator maps two RGB uint8 frames (H, W, 3) to the forward flow (H, W, 2) float32 in pixels:
``frame_b[y + v, x + u] ≈ frame_a[y, x]``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

__all__ = [
    "FlowEstimator", "DISFlow", "FarnebackFlow", "RAFTFlow",
    "FLOW_METHODS", "WEIGHTLESS_FLOW_METHODS", "DEFAULT_FLOW_METHOD", "build_flow_estimator",
]


class FlowEstimator(Protocol):
    """Anything that turns a pair of frames into a flow field."""

    def __call__(self, frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray: ...


def _grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


class DISFlow:
    """OpenCV's Dense Inverse Search (Kroeger et al. 2016): fast, CPU-only, the default.

    ``preset`` is one of ``ultrafast``, ``fast``, ``medium`` (OpenCV's presets, a speed/quality
    trade-off) or ``fine``: ``medium`` run down to the full-resolution pyramid level with smaller,
    denser patches and more descent and variational-refinement iterations. On DAVIS 240p ``fine``
    separates the moving object from the background motion better than ``medium`` (background-fit
    J 61.2 vs 58.4, ``bench/bench_flow_quality.py``) at ~3.7× its cost, still ~30 pairs/s on one core.
    """

    #: name -> (OpenCV base preset, overrides applied on top of it: OpenCV setter name -> value)
    PRESETS: dict[str, tuple[int, dict[str, int]]] = {
        "ultrafast": (cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, {}),
        "fast": (cv2.DISOPTICAL_FLOW_PRESET_FAST, {}),
        "medium": (cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, {}),
        "fine": (cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, {
            "FinestScale": 0,
            "PatchSize": 8,
            "PatchStride": 3,
            "GradientDescentIterations": 25,
            "VariationalRefinementIterations": 10,
        }),
    }

    def __init__(self, preset: str = "medium") -> None:
        if preset not in self.PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; choose from {sorted(self.PRESETS)}")
        base, overrides = self.PRESETS[preset]
        self._dis = cv2.DISOpticalFlow_create(base)
        for name, value in overrides.items():
            getattr(self._dis, f"set{name}")(value)

    def __call__(self, frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
        return self._dis.calc(_grey(frame_a), _grey(frame_b), None).astype(np.float32)


class FarnebackFlow:
    """OpenCV's Farnebäck polynomial-expansion flow: slower than DIS, smoother fields."""

    def __call__(self, frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
        flow = cv2.calcOpticalFlowFarneback(
            _grey(frame_a), _grey(frame_b), None,
            pyr_scale=0.5, levels=5, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0,
        )
        return flow.astype(np.float32)


class RAFTFlow:
    """torchvision's RAFT (Teed & Deng 2020), the paper's flow, from a local weights file.

    Nothing is downloaded: ``weights`` must name a state dict for ``raft_large`` (or ``raft_small``
    when ``small=True``), e.g. the file torchvision's ``Raft_Large_Weights`` points to, saved locally.
    Frames are padded to a multiple of 8 and the flow is un-padded afterwards.
    """

    def __init__(self, weights: str | Path, small: bool = False, device: str = "cpu", iterations: int = 12) -> None:
        import torch

        try:
            from torchvision.models.optical_flow import raft_large, raft_small
        except ImportError as error:  # pragma: no cover - depends on the installation
            raise RuntimeError("RAFT needs torchvision; install it to use --method raft") from error
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"RAFT weights file not found: {path}")
        self._torch = torch
        self.device = torch.device(device)
        self.iterations = iterations
        self.model = (raft_small if small else raft_large)(weights=None, progress=False)
        self.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.model.eval().to(self.device)

    def _tensor(self, rgb: np.ndarray):
        torch = self._torch
        t = torch.from_numpy(rgb).permute(2, 0, 1).float().div(127.5).sub(1.0)
        return t.unsqueeze(0).to(self.device)

    def __call__(self, frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
        torch = self._torch
        height, width = frame_a.shape[:2]
        pad_h, pad_w = (-height) % 8, (-width) % 8
        a, b = self._tensor(frame_a), self._tensor(frame_b)
        a = torch.nn.functional.pad(a, (0, pad_w, 0, pad_h), mode="replicate")
        b = torch.nn.functional.pad(b, (0, pad_w, 0, pad_h), mode="replicate")
        with torch.inference_mode():
            flow = self.model(a, b, num_flow_updates=self.iterations)[-1]
        return flow[0, :, :height, :width].permute(1, 2, 0).cpu().numpy().astype(np.float32)


#: Method names accepted by the CLI, the dataset tools and the service.
FLOW_METHODS: dict[str, Callable[..., FlowEstimator]] = {
    "dis": lambda **kw: DISFlow(kw.get("preset", "medium")),
    "dis-fine": lambda **kw: DISFlow("fine"),
    "dis-fast": lambda **kw: DISFlow("fast"),
    "dis-ultrafast": lambda **kw: DISFlow("ultrafast"),
    "farneback": lambda **kw: FarnebackFlow(),
    "raft": lambda **kw: RAFTFlow(kw["weights"], small=kw.get("small", False), device=kw.get("device", "cpu")),
}


#: Methods that need no weights file (everything but RAFT): what a service or a bench can build by name.
WEIGHTLESS_FLOW_METHODS: tuple[str, ...] = tuple(sorted(m for m in FLOW_METHODS if m != "raft"))

#: The flow gwm trains on and adapts with. The paper's RAFT needs weights no one can download here;
#: among classical flows on DAVIS 240p, DIS ``fine`` gave the best background-fit J
#: (``bench/bench_flow_quality.py``) and, as training flow, +3 J over ``dis`` (model 0.2.0).
DEFAULT_FLOW_METHOD = "dis-fine"


def build_flow_estimator(method: str = DEFAULT_FLOW_METHOD, **options) -> FlowEstimator:
    """Build an estimator by name (see :data:`FLOW_METHODS`); RAFT needs ``weights=<file>``."""
    if method not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {method!r}; choose from {sorted(FLOW_METHODS)}")
    if method == "raft" and not options.get("weights"):
        raise ValueError("the raft flow method needs a local weights file (--raft-weights)")
    return FLOW_METHODS[method](**options)
