"""Application factory: wires settings, model, queue, middleware and routes together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from pathlib import Path

import torch
from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from PIL import Image

from service import metrics
from service.admission import PixelBudget
from service.api import docs, health, jobs, segment
from service.api.errors import install_error_handlers
from service.api.middleware import PUBLIC_PATHS, APIKeyGuard, BodySizeLimit
from service.api.state import ServiceState
from service.data_lock import hold_data_dir
from service.inference import OnnxSegmenter
from service.maintenance import Maintenance
from service.queue import create_queue
from service.results import ResultCache
from service.settings import Settings

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"


def _load_segmenter(settings: Settings) -> tuple[OnnxSegmenter | None, str | None]:
    """Load the ONNX model; a failure keeps the service up (health, jobs) and /readyz says why."""
    try:
        return OnnxSegmenter(settings.model_path, settings.device, settings.image_merge), None
    except Exception as exc:  # noqa: BLE001 - whatever breaks loading, the service stays up to say so
        logger.error("could not load model %s: %s", settings.model_path, exc)
        return None, f"{type(exc).__name__}: {exc}"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the model and queue are created at startup and closed at shutdown."""
    settings = settings or Settings()
    # Pillow refuses to decode beyond this many pixels (decompression bombs), before our own check.
    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with hold_data_dir(settings):  # before anything sweeps it (service/data_lock.py)
            segmenter, model_error = _load_segmenter(settings)
            queue = create_queue(settings)
            budget = PixelBudget(settings.max_pixels_in_flight, settings.pixel_wait_seconds,
                                 settings.retry_after_seconds)
            results = ResultCache(settings.result_dir)
            app.state.service = ServiceState(settings, queue, segmenter, budget, results, model_error)
            metrics.set_limits(settings.max_queued_jobs, settings.max_upload_dir_bytes, settings.max_pixels_in_flight)
            maintenance = Maintenance(settings, queue)
            maintenance.start()
            logger.info("gwm service ready: queue=%s, data dir=%s", settings.queue_mode, settings.data_dir)
            try:
                yield
            finally:
                maintenance.stop()
                queue.close()

    app = FastAPIOffline(  # a FastAPI whose /docs and /redoc load their assets from this server
        title="gwm",
        summary="Guess What Moves: unsupervised foreground segmentation and per-video adaptation.",
        version=version("gwm"),
        lifespan=lifespan,
        docs_url=docs.DOCS_URL,
        redoc_url=docs.REDOC_URL,
        openapi_url=docs.OPENAPI_URL,
        static_url=docs.ASSETS_URL,
        swagger_ui_parameters=docs.SWAGGER_UI_PARAMETERS,
    )
    install_error_handlers(app)
    app.middleware("http")(metrics.record_request)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    if settings.api_key is not None:
        app.add_middleware(APIKeyGuard, api_key=settings.api_key.get_secret_value())
        docs.declare_api_key(app, PUBLIC_PATHS)
    for router in (segment.router, jobs.router, health.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    return app
