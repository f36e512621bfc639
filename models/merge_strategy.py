"""The names of the foreground merge strategies (the strategies themselves: :mod:`models.merging`).

A module of its own, free of PyTorch, so that configuration (service settings, ``gwm segment --help``)
can name the strategies without importing the math.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["PAPER_MERGE", "PHOTO_MERGE", "MergeStrategy"]


class MergeStrategy(StrEnum):
    """How K soft regions become one foreground, by the name configs and models record."""

    SPECTRAL = "spectral"
    BORDER = "border"
    FRAMED = "framed"

    @classmethod
    def _missing_(cls, value: object) -> None:
        raise ValueError(f"unknown merge strategy {value!r}; choose from {', '.join(cls)}")


#: The paper's merge; also what models that record no merge (gwm < 0.1.1) were measured with.
PAPER_MERGE = MergeStrategy.SPECTRAL

#: The merge for still photos (``/segment``, ``gwm eval --images``): a photo frames its subject,
#: which a video frame often does not (models/merging.py, ``framed``); video frames keep the model's.
PHOTO_MERGE = MergeStrategy.FRAMED
