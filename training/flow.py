"""Optical flow estimators behind one interface.

GWM only needs flow as a training signal, so any estimator works (paper Table 7 compares several).
Classical methods run anywhere on a CPU; RAFT (:mod:`training.raft`) needs a local weights file.

Every estimator maps two RGB uint8 frames (H, W, 3) to the forward flow (H, W, 2) float32 in pixels:
``frame_b[y + v, x + u] ≈ frame_a[y, x]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import cv2
import numpy as np

__all__ = [
    "DEFAULT_FLOW_METHOD",
    "DEFAULT_RAFT_ITERATIONS",
    "DEFAULT_RAFT_SCALE",
    "FLOW_METHODS",
    "WEIGHTLESS_FLOW_METHODS",
    "DISFlow",
    "FarnebackFlow",
    "FlowEstimator",
    "FlowRecipe",
    "build_flow_estimator",
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
    PRESETS: ClassVar[dict[str, tuple[int, dict[str, int]]]] = {
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


#: RAFT refinement iterations. The authors evaluate RAFT-small with 12; on DAVIS val-dev 240p frames 6
#: separate the object as well (background-fit J 71.3 vs 71.0, ``bench/bench_flow_quality.py``) at 60 %
#: of the cost, so 6 is the default.
DEFAULT_RAFT_ITERATIONS = 6
#: Frames are resized by this factor before RAFT; 1.0 = native resolution. Upsampling 240p frames 1.5×
#: separates the object better (background-fit J 74.2 vs 71.3) at 3.4× the cost per pair.
DEFAULT_RAFT_SCALE = 1.0

#: Options of the ``raft`` method besides its weights file (see :class:`training.raft.RAFTFlow`).
RAFT_OPTIONS: tuple[str, ...] = ("small", "device", "iterations", "scale")


def _raft(**options) -> FlowEstimator:
    from .raft import RAFTFlow  # torch and torchvision only when RAFT is asked for

    known = {k: options[k] for k in RAFT_OPTIONS if options.get(k) is not None}
    return RAFTFlow(options["weights"], **known)


#: Method names accepted by the CLI, the dataset tools and the service.
FLOW_METHODS: dict[str, Callable[..., FlowEstimator]] = {
    "dis": lambda **kw: DISFlow(kw.get("preset", "medium")),
    "dis-fine": lambda **kw: DISFlow("fine"),
    "dis-fast": lambda **kw: DISFlow("fast"),
    "dis-ultrafast": lambda **kw: DISFlow("ultrafast"),
    "farneback": lambda **kw: FarnebackFlow(),
    "raft": _raft,
}


#: Methods that need no weights file (everything but RAFT): what a service or a bench can build by name.
WEIGHTLESS_FLOW_METHODS: tuple[str, ...] = tuple(sorted(m for m in FLOW_METHODS if m != "raft"))

#: The flow gwm trains on and adapts with. The paper's RAFT needs weights no one can download here;
#: among classical flows on DAVIS 240p, DIS ``fine`` gave the best background-fit J
#: (``bench/bench_flow_quality.py``) and, as training flow, +3 J over ``dis`` (model 0.2.0).
DEFAULT_FLOW_METHOD = "dis-fine"

#: (height, width) the default model's training flow was computed at (DAVIS 240p).
TRAINING_FLOW_SIZE: tuple[int, int] = (240, 427)


def video_flow_size(method: str, input_size: tuple[int, int]) -> tuple[int, int]:
    """(height, width) a video job area-downscales larger frames to before flow estimation, so that a
    1080p upload costs no more flow time than a small one.

    The loss only sees the network's input grid. Classical flows run at that grid: on the val-dev
    uploads DIS at 128×224 instead of 240×427 was 2.8–3.2× faster for the same J after 20 steps
    (−0.4 on the library path, +1.1 through the service; ``bench/bench_adapt.py --variants fast
    fast-flow240``). RAFT runs at the training flow's 240×427: its features are 1/8 of the frame, and
    at 128×224 blackswan lost 17 J.
    """
    return TRAINING_FLOW_SIZE if method == "raft" else (int(input_size[0]), int(input_size[1]))


def build_flow_estimator(method: str = DEFAULT_FLOW_METHOD, **options) -> FlowEstimator:
    """Build an estimator by name (see :data:`FLOW_METHODS`); RAFT needs ``weights=<file>``."""
    if method not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {method!r}; choose from {sorted(FLOW_METHODS)}")
    if method == "raft" and not options.get("weights"):
        raise ValueError("the raft flow method needs a local weights file (--raft-weights)")
    return FLOW_METHODS[method](**options)


@dataclass(frozen=True)
class FlowRecipe:
    """How to build an estimator: a method name and its options. Unlike an estimator (which may hold an
    OpenCV object or a network), a recipe pickles, so worker processes can each build their own."""

    method: str = DEFAULT_FLOW_METHOD
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> FlowEstimator:
        return build_flow_estimator(self.method, **self.options)

    def settings(self) -> dict[str, Any]:
        """What changes the flow itself (recorded in a cache's ``meta.json``): RAFT's scale and
        iterations, and the weights file's name; not the device."""
        if self.method != "raft":
            return {}
        return {"weights": Path(self.options["weights"]).name,
                "scale": float(self.options.get("scale") or DEFAULT_RAFT_SCALE),
                "iterations": int(self.options.get("iterations") or DEFAULT_RAFT_ITERATIONS)}

    def label(self) -> str:
        """Short name for default cache directories: ``dis-fine``, ``raft-2x8``."""
        if self.method != "raft":
            return self.method
        settings = self.settings()
        return f"raft-{settings['scale']:g}x{settings['iterations']}"
