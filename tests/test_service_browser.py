"""The web page in headless Chromium against a real server, offline: what a person sees and downloads.

The server runs the shipped model, so the screenshots (kept in docs/ via GWM_TEST_SCREENSHOTS, see
tests/helpers/browser.py) show real results. Every test asserts on what was drawn: canvas pixels, the
screenshot itself, and the files behind the download buttons.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from helpers.browser import browser_page, screenshot_path, serve
from helpers.paths import DAVIS_FRAMES, WEIGHTS
from helpers.service_media import davis_frames, encode_image, encode_video, exif_rotated_jpeg, gradient_rgb

pytestmark = pytest.mark.browser

TINT = np.array([255, 40, 90])


@pytest.fixture
def server(service_settings) -> Iterator[str]:
    """The page and API on the shipped model (the tests' small limits otherwise)."""
    settings = service_settings.model_copy(update={
        "model_path": WEIGHTS / "gwm-default.onnx", "checkpoint_path": WEIGHTS / "gwm-default.pt"})
    with serve(settings) as url:
        yield url


@pytest.fixture
def page(server: str) -> Iterator[Any]:
    with browser_page() as (page, offline):
        page.goto(server)
        yield page
        assert offline.blocked == [], offline.blocked  # the page needs nothing from the internet
        assert offline.console_errors == [], offline.console_errors


def _canvas_rgb(page, selector: str) -> np.ndarray:
    """The pixels of a canvas, (H, W, 3) uint8."""
    data = page.eval_on_selector(selector, """c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height);
        return [c.width, c.height, Array.from(d.data)];
    }""")
    width, height, flat = data
    return np.array(flat, dtype=np.uint8).reshape(height, width, 4)[..., :3]


def _element_in_screenshot(page, screenshot: Path, selector: str) -> np.ndarray:
    """The part of a full-page screenshot where ``selector`` is, (h, w, 3)."""
    box = page.locator(selector).bounding_box()  # relative to the viewport, which may be scrolled
    x, y = page.evaluate("[window.scrollX, window.scrollY]")
    top, left = int(box["y"] + y), int(box["x"] + x)
    shot = np.asarray(Image.open(screenshot).convert("RGB"))
    return shot[top : top + int(box["height"]), left : left + int(box["width"])]


def _tinted(pixels: np.ndarray) -> np.ndarray:
    """Pixels pulled towards the overlay tint: red well above green (a dimmed photo has no such cast)."""
    rgb = pixels.astype(int)
    return (rgb[..., 0] - rgb[..., 1] > 60) & (rgb[..., 0] > 120)


def _drop(page, name: str, content: bytes, mime: str) -> None:
    """Drag ``content`` onto the drop zone as a file, as a person dropping it from their desktop."""
    transfer = page.evaluate_handle(
        """([name, data, mime]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: mime }));
            return transfer;
        }""",
        [name, base64.b64encode(content).decode(), mime],
    )
    page.dispatch_event("#dropzone", "dragover", {"dataTransfer": transfer})
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})


def _download(page, selector: str) -> bytes:
    with page.expect_download(timeout=60_000) as info:
        page.click(selector)
    return Path(info.value.path()).read_bytes()


def test_image_shows_original_mask_and_overlay_with_downloads(page, server: str, tmp_path: Path) -> None:
    if not (DAVIS_FRAMES / "bear").is_dir():
        pytest.skip("DAVIS frames not available")
    photo = DAVIS_FRAMES / "bear" / "00000.jpg"
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("body[data-state=chosen]")
    assert page.text_content("#chosen-kind") == "image" and page.is_hidden("#video-options")
    page.click("#submit")
    page.wait_for_selector("body[data-state=image-done]", timeout=30_000)
    for selector in ("#original", "#mask", "#overlay", "#download-mask", "#download-overlay"):
        assert page.is_visible(selector), selector
    assert page.eval_on_selector("#original", "i => [i.naturalWidth, i.naturalHeight]") == [427, 240]
    assert page.eval_on_selector("#mask", "i => [i.naturalWidth, i.naturalHeight]") == [427, 240]

    server_mask = httpx.post(f"{server}/segment", files={"file": photo.open("rb")}).content
    mask = np.asarray(Image.open(io.BytesIO(server_mask))) > 127
    assert 0.02 < mask.mean() < 0.6  # the bear, not nothing and not everything
    overlay = _canvas_rgb(page, "#overlay")
    assert overlay.shape == (240, 427, 3) and overlay.std() > 20  # a picture, not a blank canvas
    assert _tinted(overlay[mask]).mean() > 0.9 and _tinted(overlay[~mask]).mean() < 0.02  # tint where the mask is

    assert _download(page, "#download-mask") == server_mask  # the server's own PNG, byte for byte
    overlay_file = Image.open(io.BytesIO(_download(page, "#download-overlay")))
    assert overlay_file.format == "PNG" and overlay_file.size == (427, 240)
    assert "foreground" in page.inner_text("#image-stats")

    shot = screenshot_path(tmp_path, "page-image")
    page.screenshot(path=str(shot), full_page=True)
    drawn = _element_in_screenshot(page, shot, "#overlay")
    assert drawn.std() > 20 and _tinted(drawn).mean() > 0.02  # the result is on screen, not only in memory


def test_dropped_files_go_where_they_belong(page, tmp_path: Path) -> None:
    """EXIF-rotated JPEG: mask at the displayed size; a still GIF is an image; an animated GIF is a video."""
    _drop(page, "rotated.jpg", exif_rotated_jpeg(96, 64), "image/jpeg")
    page.wait_for_selector("body[data-state=chosen]")
    page.click("#submit")
    page.wait_for_selector("body[data-state=image-done]", timeout=30_000)
    assert page.eval_on_selector("#mask", "i => [i.naturalWidth, i.naturalHeight]") == [64, 96]

    frames = [Image.fromarray(gradient_rgb(64, 48)), Image.fromarray(255 - gradient_rgb(64, 48))]
    _drop(page, "still.gif", encode_image(frames[0], "GIF"), "image/gif")
    page.wait_for_function("document.querySelector('#chosen-name').textContent === 'still.gif'")
    assert page.text_content("#chosen-kind") == "image" and page.is_hidden("#video-options")
    page.click("#submit")
    page.wait_for_selector("body[data-state=image-done]", timeout=30_000)  # /segment read it

    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    _drop(page, "moving.gif", buffer.getvalue(), "image/gif")
    page.wait_for_function("document.querySelector('#chosen-name').textContent === 'moving.gif'")
    assert page.text_content("#chosen-kind") == "video" and page.is_visible("#video-options")
    assert page.inner_text("#submit") == "Segment video"


def test_error_is_shown_and_a_key_is_asked_for(service_settings, tmp_path: Path) -> None:
    from pydantic import SecretStr

    settings = service_settings.model_copy(update={"api_key": SecretStr("page-key-3d9")})
    with serve(settings) as url, browser_page() as (page, offline):
        page.goto(url)
        _drop(page, "photo.png", encode_image(Image.fromarray(gradient_rgb(96, 64)), "PNG"), "image/png")
        page.click("#submit")
        page.wait_for_selector("body[data-state=error]", timeout=30_000)
        assert "needs an API key" in page.inner_text("#error")
        assert page.eval_on_selector("#key-box", "d => d.open")
        page.fill("#apikey", "page-key-3d9")
        page.click("#submit")
        page.wait_for_selector("body[data-state=image-done]", timeout=30_000)
        assert page.is_hidden("#error")

        _drop(page, "notes.png", b"this is not an image", "image/png")
        page.click("#submit")
        page.wait_for_selector("body[data-state=error]", timeout=30_000)
        assert "not a recognised image" in page.inner_text("#error")
        assert offline.blocked == []


def _indexed_frames(count: int) -> list[np.ndarray]:
    """Frames whose top-left 16x16 block has grey level 16 + 18 n (frame n), over a moving square."""
    frames = []
    for n in range(count):
        frame = gradient_rgb(160, 96)
        frame[40:72, 20 + 6 * n : 52 + 6 * n] = (240, 230, 40)
        frame[:16, :16] = 16 + 18 * n
        frames.append(frame)
    return frames


def test_player_shows_the_source_frame_of_every_mask_at_any_stride(page, tmp_path: Path) -> None:
    video = encode_video(_indexed_frames(12), tmp_path / "indexed.mp4")
    page.set_input_files("#file", str(video))
    page.wait_for_selector("body[data-state=chosen]")
    page.fill("#steps", "0")
    page.fill("#stride", "3")
    page.click("#submit")
    page.wait_for_selector("body[data-state=video-done]", timeout=60_000)
    assert page.get_attribute("#frame", "max") == "3"
    page.check("input[name=view][value=original]")
    for i in range(4):
        page.fill("#frame", str(i))
        page.wait_for_function(f"(c => c.dataset.frame === '{i}' && c.dataset.view === 'original')"
                               "(document.querySelector('#player'))")
        level = _canvas_rgb(page, "#player")[4:12, 4:12].mean()
        assert round((level - 16) / 18) == 3 * i, (i, level)  # mask i over source frame 3 i
        assert f"source frame {3 * i}" in page.inner_text("#frame-label")


def test_video_progress_then_cancel(page, server: str, tmp_path: Path) -> None:
    if not (DAVIS_FRAMES / "bear").is_dir():
        pytest.skip("DAVIS frames not available")
    video = encode_video(davis_frames("bear", 8), tmp_path / "bear.mp4")
    page.set_input_files("#file", str(video))
    page.fill("#steps", "60")
    page.click("#submit")
    page.wait_for_selector("#cancel:visible")
    page.wait_for_function("""() => {
        const stage = document.querySelector('#stage').textContent.match(/^Adapting .* (\\d+) \\/ 60$/);
        return stage && Number(stage[1]) >= 10 && document.querySelector('#eta').textContent.includes('left');
    }""", timeout=120_000)
    value = page.eval_on_selector("#progress", "p => p.value")
    # decoding and flow are behind, adaptation (most of the work) under way: one bar for the whole job
    assert 0.1 < value < 0.9, value
    # the bar is the server's percentage of the job, at most one poll behind it
    percent = httpx.get(server + page.evaluate("job.url")).json()["progress"]["percent"]
    assert 0 <= percent - 100 * value < 5, (percent, value)
    shot = screenshot_path(tmp_path, "page-video-progress")
    page.screenshot(path=str(shot), full_page=True)
    bar = _element_in_screenshot(page, shot, "#progress")
    assert bar.shape[1] > 300 and bar.std() > 10  # drawn, partly filled
    page.click("#cancel")
    page.wait_for_selector("body[data-state=cancelled]", timeout=60_000)
    assert page.inner_text("#status") == "Cancelled." and page.is_hidden("#cancel")
    assert page.is_hidden("#progress-box") and page.is_hidden("#video-result")


def test_video_result_plays_and_downloads(page, tmp_path: Path) -> None:
    if not (DAVIS_FRAMES / "bear").is_dir():
        pytest.skip("DAVIS frames not available")
    video = encode_video(davis_frames("bear", 8), tmp_path / "bear.mp4")
    page.set_input_files("#file", str(video))
    assert page.is_visible("#video-options")
    page.fill("#steps", "2")
    page.click("#submit")
    page.wait_for_selector("body[data-state=video-done]", timeout=120_000)
    assert page.eval_on_selector("#player", "c => [c.width, c.height]") == [426, 240]
    assert page.get_attribute("#frame", "max") == "7"

    page.click("#play")
    page.wait_for_function("document.querySelector('#player').dataset.frame === '7'", timeout=30_000)
    page.wait_for_function("document.querySelector('#play').getAttribute('aria-label') === 'Play'")
    page.fill("#frame", "4")
    page.wait_for_function("document.querySelector('#player').dataset.frame === '4'")
    overlay = _canvas_rgb(page, "#player")
    assert overlay.std() > 20 and 0.01 < _tinted(overlay).mean() < 0.7  # frame drawn, foreground tinted

    members = zipfile.ZipFile(io.BytesIO(_download(page, "button[data-format=zip]"))).namelist()
    assert members == [f"{i:05d}.png" for i in range(8)]
    with av.open(io.BytesIO(_download(page, "button[data-format=video]"))) as container:
        assert sum(1 for _ in container.decode(video=0)) == 8
    result = json.loads(_download(page, "button[data-format=json]"))
    assert result["frames"] == 8 and result["frame_indices"] == list(range(8))
    stats = page.inner_text("#video-stats")
    assert "adapting" in stats and "adaptation kept" in stats and "masks kept out of background colours" in stats
    assert "detached regions held back" in stats and "growth moving with the background held back" in stats

    shot = screenshot_path(tmp_path, "page-video-result")
    page.screenshot(path=str(shot), full_page=True)
    drawn = _element_in_screenshot(page, shot, "#player")
    assert drawn.std() > 20 and _tinted(drawn).mean() > 0.01
