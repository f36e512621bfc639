"""Error types with an HTTP status, safe to show to a client.

Decoders and the job function raise :class:`ServiceError` subclasses; the API renders them
(:mod:`service.api.errors`, with ``Retry-After`` when the error says when to come back) and
``gwm segment`` prints their message. This module needs no web framework, so neither do the
decoders nor the CLI. Messages shown to clients never carry the server's absolute paths
(:func:`redact_paths`).
"""

from __future__ import annotations

import re


class ServiceError(Exception):
    """An error caused by the request or the service state, safe to show to the client."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class BadInput(ServiceError):
    """Input is malformed or truncated."""


class InvalidParameter(ServiceError):
    """A parameter outside what this server allows (a configured limit); the rest of its validation
    is FastAPI's, which answers the same status and code."""

    status = 422
    code = "invalid_parameter"


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


class TooManyRequests(ServiceError):
    """The server is at a capacity limit (pixels in flight, queued jobs); try again later."""

    status = 429
    code = "too_many_requests"


class Unavailable(ServiceError):
    """Model not loaded, queue unreachable, or no space left for uploads."""

    status = 503
    code = "unavailable"


# An absolute POSIX path with at least one directory, up to a quote, space or bracket.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])/(?:[^\s/'\"()\[\]<>,;:]+/)+([^\s/'\"()\[\]<>,;:]+)")


def redact_paths(text: str) -> str:
    """Replace absolute paths by their last component: clients need the file's name, not the server's layout."""
    return _ABSOLUTE_PATH.sub(r"\1", text)

