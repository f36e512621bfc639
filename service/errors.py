"""Error types with an HTTP status, and the handlers that render every error as JSON.

Decoders and the job function raise :class:`ServiceError` subclasses; the API
turns them into ``{"error": {"status", "code", "message"}}``. Anything else
becomes a logged 500 without a stack trace in the response.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error caused by the request or the service state, safe to show to the client."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(ServiceError):
    """Input is malformed or truncated."""


class UnsupportedMedia(ServiceError):
    """Input is not a supported image or video type."""

    status = 415
    code = "unsupported_media_type"


class TooLarge(ServiceError):
    """Input exceeds a configured size, pixel, frame or duration limit."""

    status = 413
    code = "too_large"


class NotFound(ServiceError):
    """Unknown or expired job."""

    status = 404
    code = "not_found"


class Conflict(ServiceError):
    """Operation not possible in the job's current state (e.g. result of a running job)."""

    status = 409
    code = "conflict"


class Unavailable(ServiceError):
    """Model not loaded or queue unreachable."""

    status = 503
    code = "unavailable"


def error_body(status: int, code: str, message: str) -> dict[str, dict[str, object]]:
    """The JSON body of every error response."""
    return {"error": {"status": status, "code": code, "message": message}}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    """A JSON error response."""
    return JSONResponse(error_body(status, code, message), status_code=status)


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
        return error_response(exc.status, exc.code, exc.message)

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
