"""Bad and odd input beyond what tests/test_service_*.py covers, plus OpenAPI fuzzing.

Contract: every bad input gets a JSON 4xx naming the problem, quickly, and
the service keeps serving; a video found bad only while decoding becomes a
*failed job* with a clear error; valid-but-odd files are segmented at the
size people see. After every test the service still segments a good image
and no upload is left in the data directory (success or failure).
"""

from __future__ import annotations

import fractions
import io
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image
from test_service_images import _error
from test_service_video import submit, wait_for_end

from helpers.service_media import encode_image, encode_live_webm, encode_video, gradient_rgb, undecodable_video

REPLY_SECONDS = 5.0  # generous: this machine's 2 cores are shared
GOOD_PNG = encode_image(Image.fromarray(gradient_rgb(96, 64)), "PNG")


@pytest.fixture
def api(client, service_settings) -> Iterator:
    """``client``, checked afterwards: still serving, and the uploads folder is empty."""
    yield client
    assert client.post("/segment", files={"file": ("ok.png", GOOD_PNG)}).status_code == 200
    assert not list(service_settings.upload_dir.iterdir()), "an upload outlived its request or job"


# ---------------------------------------------------------------- images


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` RGB pixels, in under 200 bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (3 * width + 1) * 2)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def jpeg_with_app1(payload: bytes) -> bytes:
    """A valid JPEG carrying ``payload`` as its EXIF (APP1) segment, however broken."""
    jpeg = encode_image(Image.fromarray(gradient_rgb(96, 64)), "JPEG")
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def jpeg_with_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return encode_image(Image.fromarray(gradient_rgb(96, 64)), "JPEG", exif=exif.tobytes())


def cv2_png(array: np.ndarray) -> bytes:
    """PNG via OpenCV, which writes 16-bit colour (Pillow cannot)."""
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def animation(format: str, **options: object) -> bytes:
    """Three 96x64 frames; the first is the one segmented."""
    frames = [Image.fromarray(np.roll(gradient_rgb(96, 64), 5 * i, axis=1)) for i in range(3)]
    return encode_image(frames[0], format, save_all=True, append_images=frames[1:], **options)


def _palette_with_transparency() -> bytes:
    palette = Image.fromarray(gradient_rgb(96, 64)).convert("P")
    return encode_image(palette, "PNG", transparency=0)


RGB48 = (gradient_rgb(96, 64).astype(np.uint16) * 257)[..., ::-1]
ODD_BUT_VALID = {  # name -> bytes; each must give a 96x64 mask
    "animated.gif": animation("GIF", duration=50),
    "animated.png": animation("PNG", duration=50),
    "animated.webp": animation("WEBP", duration=50),
    "multipage.tiff": encode_image(
        Image.fromarray(gradient_rgb(96, 64)), "TIFF", save_all=True, append_images=[Image.fromarray(gradient_rgb(40, 30))]
    ),
    "rgb48.png": cv2_png(RGB48),
    "rgba64.png": cv2_png(np.dstack([RGB48, np.full((64, 96), 65535, np.uint16)])),
    "int32.tiff": encode_image(Image.fromarray(np.arange(96 * 64, dtype=np.int32).reshape(64, 96)), "TIFF"),
    "float32.tiff": encode_image(Image.fromarray(np.linspace(0, 1, 96 * 64, dtype=np.float32).reshape(64, 96)), "TIFF"),
    "palette-transparent.png": _palette_with_transparency(),
    "bilevel.png": encode_image(Image.fromarray(gradient_rgb(96, 64)).convert("1"), "PNG"),
    "cmyk.tiff": encode_image(Image.fromarray(gradient_rgb(96, 64)).convert("CMYK"), "TIFF"),
    "exif-garbage.jpg": jpeg_with_app1(b"Exif\0\0" + b"\x13\x37" * 50),
    "exif-bad-offset.jpg": jpeg_with_app1(b"Exif\0\0MM\0\x2a\xff\xff\xff\xf0"),
    "exif-huge-count.jpg": jpeg_with_app1(b"Exif\0\0II\x2a\0\x08\0\0\0\xff\xff" + b"\0" * 24),
    "exif-cut-entry.jpg": jpeg_with_app1(b"Exif\0\0II\x2a\0\x08\0\0\0\x01\0\x12\x01\x03\0"),
    "orientation-0.jpg": jpeg_with_orientation(0),
    "orientation-9.jpg": jpeg_with_orientation(9),
    "orientation-65535.jpg": jpeg_with_orientation(65535),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the broken EXIF, as it should
@pytest.mark.parametrize("name", sorted(ODD_BUT_VALID))
def test_odd_but_valid_images_are_segmented_at_their_size(api, name: str) -> None:
    """Multi-frame: first frame; 16/32-bit and float: full range; nonsense EXIF orientation: ignored."""
    response = api.post("/segment", files={"file": (name, ODD_BUT_VALID[name])})
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(response.content)).size == (96, 64)


BAD_IMAGES = [  # (name, bytes, status, words in the message)
    ("bomb-30000.png", png_bomb(30000, 30000), 413, "decompression bomb"),
    ("bomb-2500x1700.png", png_bomb(2500, 1700), 413, "decompression bomb"),  # just over the 4 MP limit
    ("zero-width.png", png_bomb(0, 10), 400, "truncated or corrupt"),
    ("only-signature.png", b"\x89PNG\r\n\x1a\n", 400, "truncated or corrupt"),
    ("only-soi.jpg", b"\xff\xd8\xff", 400, "truncated or corrupt"),
    ("half.gif", animation("GIF")[:100], 400, "truncated or corrupt"),
    ("cut.tiff", encode_image(Image.fromarray(gradient_rgb(96, 64)), "TIFF")[:6], 400, "truncated or corrupt"),
    ("svg.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', 415, "not a recognised image"),
    ("pdf.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n", 415, "not a recognised image"),
    ("eps.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 9 9\n", 415, "not supported"),
]


@pytest.mark.parametrize(("name", "data", "status", "words"), BAD_IMAGES, ids=[b[0] for b in BAD_IMAGES])
def test_bad_images_get_a_clear_4xx_quickly(api, name: str, data: bytes, status: int, words: str) -> None:
    started = time.monotonic()
    code, message = _error(api.post("/segment", files={"file": (name, data)}))
    assert (code, name) == (status, message.split(":")[0]) and words in message, message
    assert time.monotonic() - started < REPLY_SECONDS


def test_one_bad_file_among_good_ones_is_named(api) -> None:
    files = [("file", ("good.png", GOOD_PNG)), ("file", ("bad.png", GOOD_PNG[:100]))]
    code, message = _error(api.post("/segment", files=files))
    assert code == 400 and message.startswith("bad.png:")


def test_too_many_images_in_one_request_is_413(api, service_settings) -> None:
    files = [("file", (f"{i}.png", GOOD_PNG)) for i in range(service_settings.max_images_per_request + 1)]
    code, message = _error(api.post("/segment", files=files))
    assert code == 413 and "limit" in message


@pytest.mark.parametrize("query", ["format=unknown", "regions=maybe", "format="])
def test_bad_segment_options_are_422(api, query: str) -> None:
    code, message = _error(api.post(f"/segment?{query}", files={"file": ("a.png", GOOD_PNG)}))
    assert code == 422 and query.split("=")[0] in message


# ---------------------------------------------------------------- videos


def small_clip(path: Path, frames: int = 8) -> Path:
    """A ``frames``-frame 64x48 H.264 clip with motion (moov written last, as PyAV does)."""
    return encode_video([np.roll(gradient_rgb(64, 48), 3 * i, axis=1) for i in range(frames)], path)


def vfr_clip(path: Path) -> Path:
    """Eight frames at irregular intervals (40, 120, 33, 250 ms, ...): a variable-frame-rate mp4."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
        pts = 0
        for i in range(8):
            frame = av.VideoFrame.from_ndarray(np.roll(gradient_rgb(64, 48), 3 * i, axis=1), format="rgb24")
            frame.pts, frame.time_base = pts, fractions.Fraction(1, 1000)
            pts += (40, 120, 33, 250)[i % 4]
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def empty_track(path: Path) -> Path:
    """An mp4 whose video track was opened and closed without a single frame."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    return path


def test_truncated_mp4_is_400_not_unknown_format(api, tmp_path) -> None:
    data = small_clip(tmp_path / "a.mp4").read_bytes()
    code, message = _error(submit(api, data[: len(data) // 2]))
    assert code == 400 and "truncated" in message


def test_zero_frame_video_is_415(api, tmp_path) -> None:
    code, message = _error(submit(api, empty_track(tmp_path / "zero.mp4").read_bytes()))
    assert code == 415 and "video stream is required" in message


def test_video_whose_codec_has_no_decoder_is_415(api, tmp_path) -> None:
    code, message = _error(submit(api, undecodable_video(tmp_path / "zzzz.avi").read_bytes(), "zzzz.avi"))
    assert code == 415 and "codec cannot be decoded" in message


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        ("truncated-mkv", "no decodable frames"),  # a Matroska cut short still opens: found while decoding
        ("corrupt-middle", "corrupt"),  # garbage over the middle of the H.264 data
    ],
)
def test_video_found_bad_while_decoding_is_a_failed_job(api, davis_video, tmp_path, damage: str, error: str) -> None:
    if damage == "truncated-mkv":
        data = small_clip(tmp_path / "a.mkv").read_bytes()
        data, name = data[: len(data) // 2], "cut.mkv"
    else:
        raw = bytearray(davis_video.read_bytes())
        raw[len(raw) // 2 : len(raw) // 2 + len(raw) // 10] = b"\xff" * (len(raw) // 10)
        data, name = bytes(raw), "corrupt.mp4"
    response = submit(api, data, name)
    assert response.status_code == 202, response.text  # the header is fine: accepted
    status = wait_for_end(api, response.json()["url"])
    assert status["state"] == "failed" and error in status["error"], status


def test_variable_frame_rate_video_keeps_every_frame(api, tmp_path) -> None:
    status = wait_for_end(api, submit(api, vfr_clip(tmp_path / "vfr.mp4").read_bytes()).json()["url"])
    assert status["state"] == "succeeded", status
    result = api.get(f"{status['url']}/result?format=json").json()
    assert result["frames"] == 8 and result["frame_indices"] == list(range(8)) and result["fps"] > 0


def test_more_frames_than_the_limit_uses_the_first_ones(api, tmp_path, service_settings) -> None:
    """Frames beyond GWM_MAX_VIDEO_FRAMES are not decoded (documented as max_frames' upper bound)."""
    limit = service_settings.max_video_frames
    clip = small_clip(tmp_path / "long.mp4", frames=limit + 6)
    status = wait_for_end(api, submit(api, clip.read_bytes(), query="steps=0").json()["url"])
    assert status["state"] == "succeeded", status
    assert api.get(f"{status['url']}/result?format=json").json()["frames"] == limit


def test_longer_than_the_duration_limit_is_413(service_settings, tmp_path) -> None:
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    settings = service_settings.model_copy(update={"max_video_seconds": 0.5})
    with TestClient(create_app(settings)) as client:
        code, message = _error(submit(client, small_clip(tmp_path / "a.mp4", frames=12).read_bytes()))
    assert code == 413 and "lasts" in message
    assert not list(settings.upload_dir.iterdir())


def test_stream_without_a_duration_is_held_to_the_duration_limit_while_decoding(service_settings, tmp_path) -> None:
    """A live-muxed webm states no duration, so the upload is accepted; its frames' timestamps
    then show 2 s against a 0.5 s limit, and the job fails saying so instead of decoding on."""
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    clip = encode_live_webm([np.roll(gradient_rgb(64, 48), 3 * i, axis=1) for i in range(24)], tmp_path / "live.webm")
    with av.open(str(clip)) as container:
        assert container.duration is None and container.streams.video[0].duration is None
    settings = service_settings.model_copy(update={"max_video_seconds": 0.5})
    with TestClient(create_app(settings)) as client:
        response = submit(client, clip.read_bytes(), "live.webm", "steps=0")
        assert response.status_code == 202, response.text
        status = wait_for_end(client, response.json()["url"])
    assert status["state"] == "failed" and "lasts more than 0.5 s" in status["error"], status
    assert not list(settings.upload_dir.iterdir())


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("steps=-1", 422, "steps"),
        ("steps=201", 422, "steps"),
        ("steps=1e9", 422, "steps"),
        ("max_frames=0", 422, "max_frames"),
        ("max_frames=31", 422, "max_frames"),
        ("stride=101", 422, "stride"),
        ("format=avi", 422, "format"),
    ],
)
def test_out_of_range_video_options(api, tmp_path, query: str, status: int, words: str) -> None:
    code, message = _error(submit(api, small_clip(tmp_path / "a.mp4").read_bytes(), query=query))
    assert code == status and words in message


# ---------------------------------------------------------------- job ids


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize(
    ("job_id", "status"),
    [
        ("0123456789ABCDEF0123456789ABCDEF", 400),  # upper case: not an id we make
        ("0123456789abcdef0123456789abcdef0", 400),
        ("0123456789abcdef0123456789abcde%00", 400),
        ("..%5C..%5Cwindows%5Cwin.ini", 400),
        ("%2e%2e%2f%2e%2e%2fetc%2fpasswd", 404),  # decodes to a path: no such route
        ("fedcba9876543210fedcba9876543210", 404),
    ],
)
def test_malformed_job_ids_on_every_job_route(api, method: str, job_id: str, status: int) -> None:
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/result"):
        if method == "DELETE" and path.endswith("/result"):
            continue
        code, _ = _error(api.request(method, path))
        assert code == status, path


# ---------------------------------------------------------------- fuzzing


def test_openapi_fuzzing_finds_no_5xx(service_settings) -> None:
    """Schemathesis generates requests for every operation of /openapi.json; none may answer 5xx."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hypothesis_settings

    from service.api.app import create_app

    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(service_settings))
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=25, deadline=None, derandomize=True, database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case) -> None:
            response = case.call()
            if response.status_code >= 500 or (
                response.status_code >= 400 and "error" not in response.json()
            ):
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}")

        check()
    assert not failures, "\n".join(failures[:20])
