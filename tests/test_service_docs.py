"""API documentation: /docs (Swagger UI) and /redoc from assets installed with gwm, usable offline and
with an API key; the OpenAPI schema declares the key exactly where the server demands it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import API_KEY as KEY  # the key of the keyed_* fixtures

from helpers.browser import browser_page, screenshot_path, serve

#: ReDoc's sidebar credit always points its <img> at this CDN logo and hides it when it fails to load;
#: it is decoration, the one request off the machine that either page makes.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def test_docs_pages_load_only_local_assets(keyed_client) -> None:
    for page in ("/docs", "/redoc"):
        response = keyed_client.get(page)  # public: the page is how a browser user enters the key
        assert response.status_code == 200, page
        assets = re.findall(r'(?:src|href)="([^"]+)"', response.text)
        assert assets and all(url.startswith("/docs/assets/") for url in assets), assets
        for url in assets:
            asset = keyed_client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 1000, url
    assert "fonts.googleapis" not in keyed_client.get("/redoc").text


def test_schema_declares_the_key_exactly_where_it_is_required(keyed_client) -> None:
    schema = keyed_client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key", "description": "The server's GWM_API_KEY."}
    job = "0123456789abcdef0123456789abcdef"
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            answer = keyed_client.request(method.upper(), path.replace("{job_id}", job)).status_code
            declared = operation.get("security") == [{"APIKeyHeader": []}]
            assert declared == (answer == 401), (method, path, answer)


def test_schema_without_a_key_declares_none(client) -> None:
    schema = client.get("/openapi.json").json()
    assert "securitySchemes" not in schema.get("components", {})
    assert schema["info"]["version"] == client.app.version != ""


def _get_count(metrics_text: str, route: str) -> float:
    """``gwm_http_requests_total`` of successful GETs of ``route`` (0 before the first)."""
    found = re.search(rf'^gwm_http_requests_total{{method="GET",route="{re.escape(route)}",status="200"}} (\S+)$',
                      metrics_text, flags=re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_docs_routes_have_their_own_metric_labels(client) -> None:
    """Counters live in the process's registry, so the test compares before and after."""
    routes = {"/docs": "/docs", "/redoc": "/redoc", "/openapi.json": "/openapi.json",
              "/docs/assets/swagger-ui.css": "/docs/assets", "/static/app.js": "/static", "/": "/"}
    before = client.get("/metrics").text
    for path in routes:
        assert client.get(path).status_code == 200, path
    after = client.get("/metrics").text
    for path, route in routes.items():
        assert _get_count(after, route) == _get_count(before, route) + 1, route
    assert _get_count(after, "unmatched") == _get_count(before, "unmatched")


@pytest.mark.browser
def test_swagger_ui_works_offline_and_authorises_with_the_key(keyed_settings, tmp_path: Path) -> None:
    with serve(keyed_settings) as url, browser_page() as (page, offline):
        page.goto(f"{url}/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
        assert page.inner_text(".swagger-ui .info .title").startswith("gwm")
        for path in ("/segment", "/adapt-and-segment", "/jobs/{job_id}/result", "/metrics"):
            assert page.locator(f".opblock-summary-path[data-path='{path}']").first.is_visible(), path

        video = page.locator("#operations-videos-submit_video_job_adapt_and_segment_post")
        video.locator(".opblock-summary").click()  # try-it-out is on: the streamed upload still gets a file picker
        video.locator("input[type=file]").wait_for(timeout=15_000)

        metrics = page.locator("#operations-operations-prometheus_metrics_metrics_get")

        def try_metrics() -> str:
            """Run "Try it out" on GET /metrics and return the status Swagger UI shows."""
            if not metrics.locator(".execute").is_visible():
                metrics.locator(".opblock-summary").click()
            metrics.locator(".execute").click()
            status = metrics.locator(".live-responses-table td.response-col_status:not(.col_header)")
            status.wait_for(timeout=15_000)
            return status.inner_text().split()[0]

        assert try_metrics() == "401"
        page.click("button.authorize")
        page.fill(".modal-ux input#api_key_value", KEY)
        page.click(".modal-ux button[type=submit]")
        page.click(".modal-ux button.btn-done")
        metrics.locator(".btn-clear").click()
        assert try_metrics() == "200"
        assert "gwm_http_requests_total" in metrics.locator(".live-responses-table td.response-col_description:not(.col_header)").inner_text()
        page.screenshot(path=str(screenshot_path(tmp_path, "docs-swagger")), full_page=False)

        assert offline.blocked == [], offline.blocked
        assert len(offline.console_errors) == 1 and "401" in offline.console_errors[0]  # the try without the key
        offline.console_errors.clear()

        page.goto(f"{url}/redoc")
        page.wait_for_selector("h1", timeout=30_000)
        assert page.inner_text("h1").startswith("gwm")
        assert page.locator("h2", has_text="Adapt And Segment").first.is_visible()
        assert page.get_by_text("APIKeyHeader").count() >= 1  # each protected operation names the key
        assert set(offline.blocked) <= {REDOC_LOGO}, offline.blocked
        assert page.locator(f"img[src='{REDOC_LOGO}']").count() == 0  # ReDoc dropped the failed logo
        assert [e for e in offline.console_errors if "ERR_INTERNET_DISCONNECTED" not in e] == []
