"""What the routes share: settings, the loaded model, the job queue, the pixel budget and the result cache."""

from __future__ import annotations

from dataclasses import dataclass

from service.admission import PixelBudget
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
