"""Every error leaves the app as ``{"error": {"status", "code", "message"}}`` JSON, never HTML or a traceback.

:class:`service.errors.ServiceError` keeps its status and code, its message loses server paths and its
``retry_after`` becomes a ``Retry-After`` header; FastAPI's validation errors are 422
``invalid_parameter``; Starlette's own (no such route, wrong method) get a code from their status;
anything else becomes a logged 500.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import ServiceError, redact_paths

logger = logging.getLogger(__name__)


def error_body(status: int, code: str, message: str) -> dict[str, dict[str, object]]:
    """The JSON body of every error response."""
    return {"error": {"status": status, "code": code, "message": message}}


def error_response(status: int, code: str, message: str, retry_after: int | None = None) -> JSONResponse:
    """A JSON error response; ``retry_after`` (seconds) becomes a ``Retry-After`` header."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(error_body(status, code, message), status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Register handlers so no error leaves the app as HTML or a traceback."""

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.code, redact_paths(exc.message), exc.retry_after)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_parameter", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own 404 (no such route) and 405: a code from the status, e.g. "not_found"
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error; see the server log")
