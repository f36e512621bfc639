"""What the routes share: settings, the loaded model, the job queue, the pixel budget and the result cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.admission import PixelBudget
from service.errors import Unavailable
from service.inference import OnnxSegmenter
from service.queue import JobQueue
from service.results import ResultCache
from service.settings import Settings


@dataclass
class ServiceState:
    """Created at startup; ``segmenter`` is None (with ``model_error``) when the model failed to load."""

    settings: Settings
    queue: JobQueue
    segmenter: OnnxSegmenter | None
    pixel_budget: PixelBudget
    results: ResultCache
    model_error: str | None = None


def get_state(request: Request) -> ServiceState:
    """FastAPI dependency: the service state of this app."""
    return request.app.state.service


def get_segmenter(state: Annotated[ServiceState, Depends(get_state)]) -> OnnxSegmenter:
    """FastAPI dependency: the model, or 503 while it is not loaded."""
    if state.segmenter is None:
        raise Unavailable(f"model not loaded: {state.model_error}")
    return state.segmenter


State = Annotated[ServiceState, Depends(get_state)]
Segmenter = Annotated[OnnxSegmenter, Depends(get_segmenter)]
