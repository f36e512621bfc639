"""Precomputed optical flow on disk: compact, resumable, memory-mappable.

Layout: ``<cache>/<sequence>/gap<±g>.npy`` holds the flow from every frame ``i`` to frame ``i + g``
for the frames where ``i + g`` exists, as float16 (N − |g|, h, w, 2) in pixels of the stored grid
(h, w). ``<cache>/meta.json`` records the method and grid so that a cache is never silently mixed
with another. Each file is written to a temporary name and renamed when complete, so an interrupted
run resumes at the first missing file.

float16 keeps 1/1000-pixel precision over ±60 px, far finer than any estimator's accuracy, at half
the size of float32. At 128×224 the whole DAVIS-2016 set (3.5 k frames, four gaps) takes ~1.3 GB.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from models.preprocessing import resize_flow

from .flow import FlowEstimator, FlowRecipe
from .frames import VideoFolder

__all__ = ["PAPER_GAPS", "FlowCache", "FlowCacheSpec", "compute_sequence_flow", "default_cache_dir"]

log = logging.getLogger(__name__)

#: Frame gaps used for DAVIS in the paper (App. A).
PAPER_GAPS: tuple[int, ...] = (-2, -1, 1, 2)


def default_cache_dir(method: str, size: Sequence[int]) -> str:
    """Where ``gwm flow`` stores a method's cache by default: one directory per method and grid."""
    return f"cache/flow-{method}-{size[0]}x{size[1]}"


@dataclass(frozen=True)
class FlowCacheSpec:
    """What a cache holds; stored as ``meta.json`` and checked on reuse."""

    method: str
    height: int
    width: int
    gaps: tuple[int, ...] = PAPER_GAPS
    settings: dict[str, Any] = field(default_factory=dict)  # e.g. RAFT's scale and iterations

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> FlowCacheSpec:
        data = json.loads(text)
        data["gaps"] = tuple(data["gaps"])
        return cls(**data)


def compute_sequence_flow(
    video: VideoFolder | Sequence[np.ndarray],
    gap: int,
    estimator: FlowEstimator,
    size: tuple[int, int] | None = None,
    on_pair: Callable[[], None] | None = None,
) -> np.ndarray:
    """Flow from each frame i to frame i + gap, resized to ``size``: (N − |gap|, h, w, 2) float32.

    ``on_pair`` is called after every frame pair (progress; it may raise to stop between pairs)."""
    frames = [video.read(i) for i in range(len(video))] if isinstance(video, VideoFolder) else list(video)
    sources = range(max(0, -gap), min(len(frames), len(frames) - gap))
    flows = []
    for i in sources:
        flow = estimator(frames[i], frames[i + gap])
        flows.append(resize_flow(flow, size) if size is not None else flow)
        if on_pair is not None:
            on_pair()
    return np.stack(flows)


class FlowCache:
    """A directory of precomputed flow for a set of sequences."""

    def __init__(self, root: str | Path, spec: FlowCacheSpec | None = None) -> None:
        self.root = Path(root)
        meta = self.root / "meta.json"
        stored = FlowCacheSpec.from_json(meta.read_text()) if meta.is_file() else None
        if spec is None:
            if stored is None:
                raise FileNotFoundError(f"{self.root} is not a flow cache (no meta.json); run `gwm flow` first")
            spec = stored
        elif stored is not None and stored != spec:
            raise ValueError(f"flow cache {self.root} holds {stored}, not the requested {spec}; use another directory")
        self.spec = spec

    def path(self, sequence: str, gap: int) -> Path:
        return self.root / sequence / f"gap{gap:+d}.npy"

    def has(self, sequence: str, gap: int) -> bool:
        return self.path(sequence, gap).is_file()

    def load(self, sequence: str, gap: int, mmap: bool = True) -> np.ndarray:
        """Flow array (N − |gap|, h, w, 2) float16; row j is the flow of frame ``j + max(0, -gap)``."""
        return np.load(self.path(sequence, gap), mmap_mode="r" if mmap else None)

    def build(
        self,
        videos: Sequence[VideoFolder],
        estimator: FlowEstimator | FlowRecipe,
        progress: bool = True,
        workers: int = 1,
    ) -> None:
        """Compute every missing (sequence, gap) file; existing complete files are kept.

        With ``workers`` > 1 the files are shared out to that many processes, each building its own
        estimator from ``estimator`` (then a :class:`FlowRecipe`) with one thread, so that every core
        works on its own frame pair (RAFT on one frame pair scales poorly across threads).
        """
        if workers > 1 and not isinstance(estimator, FlowRecipe):
            raise TypeError("parallel flow needs a FlowRecipe (estimators do not cross process boundaries)")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "meta.json").write_text(self.spec.to_json())
        todo = [(v, g) for v in videos for g in self.spec.gaps if not self.has(v.name, g)]
        done = len(videos) * len(self.spec.gaps) - len(todo)
        if done:
            log.info("flow cache: %d of %d files already present, resuming", done, done + len(todo))
        total_pairs = sum(len(v) - abs(g) for v, g in todo)
        with tqdm(total=total_pairs, unit="flow", disable=not progress, desc="optical flow", smoothing=0.05) as bar:
            if workers <= 1:
                flow_estimator = estimator.build() if isinstance(estimator, FlowRecipe) else estimator
                for video, gap in todo:
                    bar.update(self._compute_file(video, gap, flow_estimator))
                return
            context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                     initargs=(estimator, os.getpid())) as pool:
                futures = [pool.submit(_worker_compute, self.root, self.spec, video, gap) for video, gap in todo]
                for future in as_completed(futures):
                    bar.update(future.result())

    def _compute_file(self, video: VideoFolder, gap: int, estimator: FlowEstimator) -> int:
        """Compute and atomically write one (sequence, gap) file; returns its number of flow fields."""
        flow = compute_sequence_flow(video, gap, estimator, (self.spec.height, self.spec.width)).astype(np.float16)
        target = self.path(video.name, gap)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.partial.npy")
        np.save(partial, flow)
        os.replace(partial, target)
        return len(flow)


_worker_estimator: FlowEstimator | None = None


#: How often a worker checks that the process that started it is still alive.
_PARENT_POLL_S = 1.0


def _exit_with_parent(parent: int) -> None:
    """End this worker once its parent is gone: a parent killed by a signal it cannot clean up after
    (SIGTERM, SIGKILL) would otherwise leave its workers computing flow for nobody."""
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_S)
    os._exit(1)


def _start_worker(recipe: FlowRecipe, parent: int) -> None:
    """Worker-process initialiser: one thread per process, one estimator per process, and a watch
    on the ``parent`` process (its id is passed in: a worker may start after its parent died)."""
    global _worker_estimator
    import cv2

    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="parent-watch").start()

    cv2.setNumThreads(1)
    if recipe.method == "raft":
        import torch

        torch.set_num_threads(1)
    _worker_estimator = recipe.build()


def _worker_compute(root: Path, spec: FlowCacheSpec, video: VideoFolder, gap: int) -> int:
    assert _worker_estimator is not None, "worker not initialised"
    return FlowCache(root, spec)._compute_file(video, gap, _worker_estimator)
