"""Pure-ASGI guards that run before any body is parsed: API key and body size.

They are ASGI rather than FastAPI dependencies so that a rejected request
costs nothing: the body is never read, and the multipart parser never sees
more than ``GWM_MAX_UPLOAD_BYTES``.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.docs import DOCS_PATHS, DOCS_PREFIX
from service.api.errors import error_response

#: Reachable without the key: health checks, the web page and the API documentation (whose
#: Authorize button is how a browser user enters the key in the first place).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/", "/favicon.ico"}) | DOCS_PATHS
PUBLIC_PREFIXES = ("/static/", DOCS_PREFIX)


async def _send_error(scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str) -> None:
    """Answer with the same JSON response the app's error handlers produce, byte for byte."""
    await error_response(status, code, message)(scope, receive, send)


class APIKeyGuard:
    """Require ``X-API-Key`` on everything but health checks and the static web page."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        provided = dict(scope["headers"]).get(b"x-api-key", b"")
        if not hmac.compare_digest(provided, self._key):
            await _send_error(scope, receive, send, 401, "unauthorized", "missing or wrong X-API-Key header")
            return
        await self.app(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Reject bodies over ``max_bytes``: by Content-Length up front, or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request body exceeds the limit of {self.max_bytes} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_error(scope, receive, send, 413, "too_large", message)
            return

        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            incoming = await receive()
            if incoming["type"] == "http.request":
                received += len(incoming.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return incoming

        async def guarded_send(outgoing: Message) -> None:
            # After an overflow the app answers with whatever its body parser makes of the
            # interrupted stream; replace that answer with the 413 it really is.
            nonlocal started
            if exceeded:
                if not started:
                    started = True
                    await _send_error(scope, receive, send, 413, "too_large", message)
                return
            started = started or outgoing["type"] == "http.response.start"
            await send(outgoing)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            if not started:
                await _send_error(scope, receive, send, 413, "too_large", message)
