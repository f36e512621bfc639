"""Liveness, readiness and metrics."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from service import metrics
from service.api.state import State
from service.uploads import directory_bytes

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: State) -> JSONResponse:
    """Ready when the model is loaded and the queue is reachable; reports the execution providers."""
    queue_ok = await run_in_threadpool(state.queue.ping)
    model = asdict(state.segmenter.info) if state.segmenter else {"error": state.model_error}
    ready = state.segmenter is not None and queue_ok
    body = {
        "status": "ready" if ready else "not ready",
        "model": model,
        "queue": {"mode": state.settings.queue_mode, "reachable": queue_ok},
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def prometheus_metrics(state: State) -> Response:
    """Prometheus text format."""
    depth = await run_in_threadpool(state.queue.depth)
    upload_bytes = await run_in_threadpool(directory_bytes, state.settings.upload_dir)
    return metrics.render(depth, upload_bytes, state.pixel_budget.in_flight)
