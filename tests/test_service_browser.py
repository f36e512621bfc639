"""The web page in headless Chromium against a real uvicorn on a loopback port.

Uses the system Chromium (``GWM_TEST_CHROMIUM``, default /usr/bin/chromium) through
Playwright; skipped where either is missing. Never downloads a browser.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service_media import davis_frames, encode_video, exif_rotated_jpeg

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("GWM_TEST_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


@pytest.fixture
def server_url(service_settings) -> Iterator[str]:
    """Base URL of the app served by uvicorn in a background thread."""
    import uvicorn

    from service.api.app import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service_settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def page(server_url: str):
    """A Chromium page; skips cleanly without Playwright or a browser."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        page = browser.new_page()
        page.goto(server_url)
        yield page
        browser.close()


def test_image_upload_shows_overlay(page, tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(exif_rotated_jpeg(96, 64))
    page.set_input_files("#file", str(image))
    page.click("#submit")
    page.wait_for_selector("#overlay:not([hidden])", timeout=20_000)
    size = page.eval_on_selector("#overlay", "img => img.complete && [img.naturalWidth, img.naturalHeight]")
    assert size == [64, 96]  # EXIF-oriented size
    assert "Done" in page.inner_text("#status")


def test_video_upload_shows_progress_and_masks(page, tmp_path: Path) -> None:
    if not davis_frames("bear", 1):
        pytest.skip("DAVIS frames not available")
    video = encode_video(davis_frames("bear", 4), tmp_path / "bear.webm", codec="libvpx-vp9")
    page.fill("#steps", "1")
    page.set_input_files("#file", str(video))
    page.click("#submit")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Done')", timeout=60_000)
    assert page.eval_on_selector("#canvas", "c => [c.width, c.height]") == [426, 240]
    assert page.get_attribute("#frame", "max") == "3"
