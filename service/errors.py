"""Error types with an HTTP status, safe to show to a client.

Decoders and the job function raise :class:`ServiceError` subclasses; the API renders them
(:mod:`service.api.errors`) and ``gwm segment`` prints their message. This module needs no web
framework, so neither do the decoders nor the CLI.
"""

from __future__ import annotations


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
