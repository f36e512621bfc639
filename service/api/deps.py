"""FastAPI dependencies of the routes, as ``Annotated`` aliases named ``*Dep``.

The suffix keeps them apart from the classes they hand out: ``SegmenterDep`` is the service's loaded
:class:`~service.inference.OnnxSegmenter`, never the network base class
:class:`models.segmenters.Segmenter`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.state import ServiceState
from service.errors import Unavailable
from service.inference import OnnxSegmenter

__all__ = ["SegmenterDep", "StateDep", "get_segmenter", "get_state"]


def get_state(request: Request) -> ServiceState:
    """The service state of this app."""
    return request.app.state.service


def get_segmenter(state: Annotated[ServiceState, Depends(get_state)]) -> OnnxSegmenter:
    """The model, or 503 while it is not loaded."""
    if state.segmenter is None:
        raise Unavailable(f"model not loaded: {state.model_error}")
    return state.segmenter


StateDep = Annotated[ServiceState, Depends(get_state)]
SegmenterDep = Annotated[OnnxSegmenter, Depends(get_segmenter)]
