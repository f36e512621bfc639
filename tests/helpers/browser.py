"""Headless Chromium against a real uvicorn on a loopback port, with the network cut off.

Uses the system Chromium (``GWM_TEST_CHROMIUM``, default /usr/bin/chromium) through Playwright;
tests skip where either is missing, and no browser is ever downloaded. Every request the page makes
to anything but the server under test is aborted and recorded, so a test can assert that a page
works offline (no CDN) instead of hoping so. Screenshots go to ``GWM_TEST_SCREENSHOTS`` when set
(docs/screenshots is refreshed that way), else to the test's tmp_path.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path(os.environ.get("GWM_TEST_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
LOOPBACK = {"127.0.0.1", "localhost"}


@contextmanager
def serve(settings: Any) -> Iterator[str]:
    """The app on ``settings`` served by uvicorn in a background thread; yields its base URL."""
    import uvicorn

    from service.api.app import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class Offline:
    """Requests a page tried to send off the machine (all aborted), and its console errors."""

    blocked: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


@contextmanager
def browser_page(viewport: tuple[int, int] = (1280, 900)) -> Iterator[tuple[Any, Offline]]:
    """A Chromium page that can reach loopback only; skips cleanly without Playwright or a browser."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    offline = Offline()

    def only_loopback(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).scheme in {"http", "https", "ws", "wss"} and urlsplit(url).hostname not in LOOPBACK:
            offline.blocked.append(url)
            route.abort("internetdisconnected")
        else:
            route.continue_()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                          accept_downloads=True)
            context.route("**/*", only_loopback)
            page = context.new_page()
            page.on("console", lambda message: message.type == "error" and offline.console_errors.append(message.text))
            yield page, offline
        finally:
            browser.close()


def screenshot_path(tmp_path: Path, name: str) -> Path:
    """Where a test's screenshot ``name`` goes (see the module docstring)."""
    folder = Path(os.environ["GWM_TEST_SCREENSHOTS"]) if os.environ.get("GWM_TEST_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.png"
