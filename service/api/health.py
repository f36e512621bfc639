"""Liveness, readiness and metrics."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from service import metrics
from service.api.deps import StateDep
from service.errors import redact_paths
from service.uploads import directory_bytes

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> JSONResponse:
    """Ready when the model is loaded and the queue is reachable; reports the execution providers, the
    foreground merge of still images and of video frames, and whether photos keep their aspect ratio.

    Unauthenticated, so it names the model file but never shows where the server keeps it.
    """
    queue_ok = await run_in_threadpool(state.queue.ping)
    if state.segmenter is not None:
        info = state.segmenter.info
        video_merge = state.settings.merge or state.segmenter.spec.merge
        model = {**asdict(info), "path": Path(info.path).name, "merge": {"images": info.merge, "video": video_merge}}
    else:
        model = {"error": redact_paths(state.model_error or "not loaded")}
    ready = state.segmenter is not None and queue_ok
    body = {
        "status": "ready" if ready else "not ready",
        "model": model,
        "queue": {"mode": state.settings.queue_mode, "reachable": queue_ok},
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def prometheus_metrics(state: StateDep) -> Response:
    """Prometheus text format."""
    depth = await run_in_threadpool(state.queue.depth)
    upload_bytes = await run_in_threadpool(directory_bytes, state.settings.upload_dir)
    return metrics.render(depth, upload_bytes, state.pixel_budget.in_flight)
