"""Where the tests find the repository, the shipped weights and the datasets beside the repository."""

from __future__ import annotations

from pathlib import Path

from training.frames import DEFAULT_EVAL_DATA, DEFAULT_RESOLUTION

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "models" / "weights"
#: ``../shared`` next to the repository: datasets and weights files that are not committed.
SHARED = REPO.parent / "shared"
#: DAVIS-2016 where ``gwm`` looks by default (its paths are relative to the repository root).
DAVIS = (REPO / DEFAULT_EVAL_DATA).resolve()
DAVIS_FRAMES = DAVIS / "JPEGImages" / DEFAULT_RESOLUTION
