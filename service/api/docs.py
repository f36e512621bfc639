"""Interactive API documentation that works with no network: Swagger UI at ``/docs``, ReDoc at ``/redoc``.

FastAPI's own pages load their JavaScript and CSS from a CDN, so behind a firewall or on a laptop
offline they are blank. ``fastapi-offline`` ships both bundles as package data; the app serves them
from ``/docs/assets``. The pages, the assets and ``/openapi.json`` stay public when an API key is set
(the schema holds no secret), and the key is declared in the schema so that Swagger UI's *Authorize*
button asks for it and sends it as ``X-API-Key`` with every *Try it out* request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OPENAPI_URL = "/openapi.json"
ASSETS_URL = "/docs/assets"
#: What a browser needs to show the documentation (Swagger UI's OAuth2 redirect page included).
DOCS_PATHS = frozenset({DOCS_URL, REDOC_URL, OPENAPI_URL, f"{DOCS_URL}/oauth2-redirect"})
DOCS_PREFIX = f"{DOCS_URL}/"

API_KEY_SCHEME = "APIKeyHeader"

#: Swagger UI options: keep the key across reloads, open "Try it out" directly, and never call the
#: public validator service (it would be a request to the internet on every page load).
SWAGGER_UI_PARAMETERS: dict[str, Any] = {"persistAuthorization": True, "tryItOutEnabled": True, "validatorUrl": None}


def declare_api_key(app: FastAPI, public_paths: frozenset[str]) -> None:
    """Mark every operation outside ``public_paths`` as needing the ``X-API-Key`` header in the schema.

    The header is enforced by :class:`service.api.middleware.APIKeyGuard` before routing; this only
    tells clients (and Swagger UI) about it.
    """
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("securitySchemes", {})[API_KEY_SCHEME] = {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": "The server's GWM_API_KEY.",
            }
            for path, operations in schema["paths"].items():
                if path not in public_paths:
                    for operation in operations.values():
                        operation["security"] = [{API_KEY_SCHEME: []}]
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema
