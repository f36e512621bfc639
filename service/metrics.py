"""Prometheus metrics: HTTP requests, video jobs, and how full each capacity limit is.

Metrics live in the default registry of the process that records them: the
API records requests, and jobs where they run (embedded mode: the API
process; redis mode: each ``gwm worker``, which serves them on
``--metrics-port``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

REQUESTS = Counter("gwm_http_requests_total", "HTTP requests by route and status.", ["method", "route", "status"])
LATENCY = Histogram(
    "gwm_http_request_duration_seconds",
    "HTTP request latency by route.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
JOBS = Counter("gwm_jobs_total", "Video jobs by outcome.", ["outcome"])
JOB_DURATION = Histogram(
    "gwm_job_duration_seconds",
    "Video job wall time by outcome.",
    ["outcome"],
    buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
JOB_STAGE_DURATION = Histogram(
    "gwm_job_stage_duration_seconds",
    "Wall time of each stage of a video job.",
    ["stage"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
QUEUE_DEPTH = Gauge("gwm_queue_depth", "Video jobs waiting for a worker.")
QUEUE_MAX = Gauge("gwm_queue_max_jobs", "Video jobs that may wait (GWM_MAX_QUEUED_JOBS); submits beyond get a 429.")
UPLOAD_BYTES = Gauge("gwm_upload_bytes", "Bytes of uploaded videos on disk, waiting for or read by jobs.")
UPLOAD_MAX_BYTES = Gauge(
    "gwm_upload_max_bytes", "Bytes uploads may take on disk (GWM_MAX_UPLOAD_DIR_BYTES); uploads beyond get a 503."
)
PIXELS_IN_FLIGHT = Gauge("gwm_pixels_in_flight", "Pixels that admitted /segment requests are decoding now.")
PIXELS_MAX = Gauge(
    "gwm_pixels_in_flight_max", "Pixels /segment may decode at once (GWM_MAX_PIXELS_IN_FLIGHT); beyond, requests wait."
)
RESULT_CACHE = Counter(
    "gwm_result_cache_total",
    "Requests for a packaged job result (zip, mp4): hit = served as packaged before.",
    ["outcome"],
)


def observe_job(outcome: str, seconds: float, stages: dict[str, float]) -> None:
    """Record one finished job."""
    JOBS.labels(outcome).inc()
    JOB_DURATION.labels(outcome).observe(seconds)
    for stage, stage_seconds in stages.items():
        JOB_STAGE_DURATION.labels(stage).observe(stage_seconds)


def _route_template(request: Request, scope: Scope) -> str:
    """The matched route's path template, so /jobs/<id> does not create one series per id.

    FastAPI's API routes record themselves in the request's scope; plain Starlette routes and mounts
    (the OpenAPI schema, the docs assets, the web page's static files) do not, so they are matched
    here against ``scope``, a copy taken before routing (a mount rewrites the paths in the original).
    """
    route = request.scope.get("route")
    if route is None:
        route = next((r for r in request.app.router.routes if r.matches(scope)[0] is Match.FULL), None)
    return getattr(route, "path", None) or "unmatched"


async def record_request(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """HTTP middleware: count and time every request."""
    started = time.perf_counter()
    scope = dict(request.scope)
    response = await call_next(request)
    route = _route_template(request, scope)
    REQUESTS.labels(request.method, route, str(response.status_code)).inc()
    LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
    return response


def set_limits(max_queued_jobs: int, max_upload_bytes: int, max_pixels_in_flight: int) -> None:
    """Publish the configured limits next to the gauges they bound."""
    QUEUE_MAX.set(max_queued_jobs)
    UPLOAD_MAX_BYTES.set(max_upload_bytes)
    PIXELS_MAX.set(max_pixels_in_flight)


def render(queue_depth: int, upload_bytes: int, pixels_in_flight: int) -> Response:
    """The /metrics response, with the queue depth, upload bytes and pixels in flight sampled now."""
    QUEUE_DEPTH.set(queue_depth)
    UPLOAD_BYTES.set(upload_bytes)
    PIXELS_IN_FLIGHT.set(pixels_in_flight)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
