"""POST /segment with real files in every supported format and mode, and the ways it rejects input."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from helpers.service_media import encode_image, exif_rotated_jpeg, gradient_rgb, image_variants
from service import rle

VARIANTS = image_variants(96, 64)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_png_mask_has_image_size(client, name: str) -> None:
    response = client.post("/segment", files={"file": (name, VARIANTS[name])})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    mask = Image.open(io.BytesIO(response.content))
    assert mask.mode == "L" and mask.size == (96, 64)
    assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_exif_orientation_is_applied(client) -> None:
    response = client.post("/segment", files={"file": ("rotated.jpg", exif_rotated_jpeg(96, 64))})
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).size == (64, 96)


def test_json_summary_matches_png(client) -> None:
    files = {"file": ("rgb.png", VARIANTS["rgba.png"])}
    summary = client.post("/segment?format=json&regions=true", files=files).json()
    png = np.asarray(Image.open(io.BytesIO(client.post("/segment", files=files).content))) > 0
    mask = rle.decode(summary["rle"])
    assert (summary["width"], summary["height"]) == (96, 64)
    assert np.array_equal(mask, png)
    assert summary["foreground_area"] == int(mask.sum())
    assert len(summary["regions"]) == 4
    assert all(0 <= r["area"] <= 1 and 0 <= r["foreground"] <= 1 for r in summary["regions"])


def test_overlay_is_an_image_of_the_same_size(client) -> None:
    response = client.post("/segment?format=overlay", files={"file": ("a.bmp", VARIANTS["rgb.bmp"])})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(response.content)).size == (96, 64)


def test_several_files_give_a_zip_or_a_json_list(client) -> None:
    small = encode_image(Image.fromarray(gradient_rgb(40, 30)), "PNG")
    files = [("file", ("a.jpg", VARIANTS["rgb.jpg"])), ("file", ("b.png", small))]
    archive = zipfile.ZipFile(io.BytesIO(client.post("/segment", files=files).content))
    assert archive.namelist() == ["000-a.png", "001-b.png"]
    assert Image.open(archive.open("001-b.png")).size == (40, 30)
    items = client.post("/segment?format=json", files=files).json()
    assert [(i["filename"], i["width"], i["height"]) for i in items] == [("a.jpg", 96, 64), ("b.png", 40, 30)]


def test_photos_of_other_shapes_in_one_request_get_the_masks_they_get_alone(client) -> None:
    """Each photo is fed in its own aspect ratio (the model keeps it), so a request mixing portrait and
    landscape photos runs the network once per input size: every mask must still be its own photo's."""
    shapes = {"portrait.png": (120, 60), "landscape.png": (60, 120), "square.png": (80, 80), "flipped.png": (120, 60)}
    files = [("file", (name, encode_image(Image.fromarray(gradient_rgb(w, h)[:, ::-1] if "flipped" in name
                                                            else gradient_rgb(w, h)), "PNG")))
             for name, (h, w) in shapes.items()]
    together = client.post("/segment?format=json&regions=true", files=files).json()
    for (name, (height, width)), item, single in zip(shapes.items(), together, files, strict=True):
        alone = client.post("/segment?format=json&regions=true", files={"file": single[1]}).json()
        assert (item["filename"], item["height"], item["width"]) == (name, height, width)
        assert item["rle"] == alone["rle"] and item["regions"] == alone["regions"], name


def _error(response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"}, body
    return response.status_code, body["error"]["message"]


@pytest.mark.parametrize(
    ("files", "status", "words"),
    [
        ({"file": ("empty.png", b"")}, 400, "empty"),
        ({"upload": ("a.png", VARIANTS["rgba.png"])}, 422, "file"),
        ({"file": ("notes.txt", b"hello, this is text")}, 415, "not a recognised image"),
        ({"file": ("cut.png", VARIANTS["rgba.png"][:200])}, 400, "truncated"),
        ({"file": ("cut.jpg", VARIANTS["rgb.jpg"][:300])}, 400, "truncated"),
    ],
)
def test_bad_uploads_are_clear_4xx(client, files, status: int, words: str) -> None:
    code, message = _error(client.post("/segment", files=files))
    assert code == status and words in message


def test_no_body_is_422(client) -> None:
    code, message = _error(client.post("/segment"))
    assert code == 422 and "file" in message


def test_over_pixel_limit_is_413(client) -> None:
    big = encode_image(Image.new("L", (2100, 2000)), "PNG")  # 4.2 MP > 4 MP limit of the fixture
    code, message = _error(client.post("/segment", files={"file": ("big.png", big)}))
    assert code == 413 and "pixels" in message


def test_decompression_bomb_is_413_without_decoding(client) -> None:
    bomb = encode_image(Image.new("1", (12000, 12000)), "PNG")  # 144 MP in a few kB
    assert len(bomb) < 100_000
    code, message = _error(client.post("/segment", files={"file": ("bomb.png", bomb)}))
    assert code == 413 and "decompression bomb" in message


def test_bad_format_parameter_is_422(client) -> None:
    code, message = _error(client.post("/segment?format=gif", files={"file": ("a.png", VARIANTS["rgba.png"])}))
    assert code == 422 and "format" in message


def test_video_posted_as_image_is_415(client, davis_video) -> None:
    code, message = _error(client.post("/segment", files={"file": ("v.mp4", davis_video.read_bytes())}))
    assert code == 415 and "adapt-and-segment" in message


def test_body_over_upload_limit_is_413(client, service_settings) -> None:
    payload = b"\0" * (service_settings.max_upload_bytes + 1)
    code, message = _error(client.post("/segment", files={"file": ("huge.png", payload)}))
    assert code == 413 and "limit" in message


def test_zip_entry_names_cannot_leave_the_folder(client) -> None:
    """Client file names become entry names: no directories, no `..`, no backslashes."""
    png = VARIANTS["grey.png"]
    names = ["../../etc/evil.png", "..\\..\\windows\\evil.png", "..", "C:\\photos\\my holiday.png"]
    response = client.post("/segment", files=[("file", (name, png)) for name in names])
    entries = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
    assert entries == ["000-evil.png", "001-evil.png", "002-image.png", "003-my_holiday.png"]


def test_refine_option_serves_the_guided_filter_mask(client, service_settings) -> None:
    """``refine=true`` answers with exactly the library's refined mask, at the image's own size."""
    from service import encoding
    from service.inference import OnnxSegmenter

    image = np.zeros((90, 160, 3), np.uint8)
    image[20:70, 40:120] = (230, 200, 40)
    body = encode_image(Image.fromarray(image), "PNG")
    refined = client.post("/segment?format=json&refine=true", files={"file": ("a.png", body, "image/png")})
    assert refined.status_code == 200
    assert refined.json()["width"] == 160 and refined.json()["height"] == 90
    decoded = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    local = OnnxSegmenter(service_settings.model_path, "cpu")
    expected = local.segment([decoded], refine=True)[0].mask
    assert not np.array_equal(expected, local.segment([decoded])[0].mask)  # the filter changed something
    assert refined.json() == {"filename": "a.png", **encoding.mask_summary(expected, None)}
    assert rle.encode(expected) == refined.json()["rle"]
    bad = client.post("/segment?refine=maybe", files={"file": ("a.png", body, "image/png")})
    assert bad.status_code == 422
