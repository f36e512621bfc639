"""``gwm segment`` on real files: the same bytes and JSON as the API, masks ZIP and video for videos,
several files and globs, progress on stderr, and clear failures."""

from __future__ import annotations

import io
import json
import logging
import time
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from gwm_cli.main import main
from helpers.service_media import (
    encode_image,
    encode_video,
    exif_rotated_jpeg,
    gradient_rgb,
    image_variants,
    undecodable_video,
)
from service.local import Kind, kind_of


@pytest.fixture
def model_args(tiny_model) -> list[str]:
    """The tiny model of the service tests, on the CPU: the CLI then runs what ``client`` serves."""
    onnx_path, checkpoint_path = tiny_model
    return ["--model", str(onnx_path), "--checkpoint", str(checkpoint_path), "--device", "cpu"]


def _api_result(client, video: Path, query: str, format: str) -> bytes:
    """What the service returns for ``video``: submit, wait, fetch the result in ``format``."""
    url = client.post(f"/adapt-and-segment?{query}", files={"file": (video.name, video.read_bytes())}).json()["url"]
    deadline = time.monotonic() + 120
    while (state := client.get(url).json()["state"]) not in {"succeeded", "failed"}:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert state == "succeeded"
    return client.get(f"{url}/result?format={format}").content


def _zip_members(content: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_image_mask_is_the_apis_byte_for_byte(client, model_args, tmp_path: Path, capsys) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(exif_rotated_jpeg(96, 64))
    assert main(["segment", str(photo), *model_args]) == 0
    written = tmp_path / "photo.mask.png"
    assert capsys.readouterr().out.splitlines() == [str(written)]
    expected = client.post("/segment", files={"file": ("photo.jpg", photo.read_bytes())}).content
    assert written.read_bytes() == expected
    assert Image.open(written).size == (64, 96)  # EXIF-oriented, as the API
    assert photo.read_bytes() == exif_rotated_jpeg(96, 64)  # the input is untouched


def test_several_files_and_a_glob_as_json_match_the_api(client, model_args, tmp_path: Path, capsys) -> None:
    variants = image_variants()
    for name in ("rgb.jpg", "grey16.png", "rgba.png"):
        (tmp_path / name).write_bytes(variants[name])
    assert main(["segment", str(tmp_path / "rgb.jpg"), str(tmp_path / "*.png"), "--format", "json", "--regions",
                 "-q", *model_args]) == 0
    documents = json.loads(capsys.readouterr().out)
    assert [Path(d["filename"]).name for d in documents] == ["rgb.jpg", "grey16.png", "rgba.png"]
    for document in documents:
        name = Path(document.pop("filename")).name
        api = client.post("/segment?format=json&regions=true", files={"file": (name, variants[name])}).json()
        api.pop("filename")
        assert document == api, name
        assert len(document["regions"]) == 4
    out = tmp_path / "report" / "masks.json"
    assert main(["segment", str(tmp_path / "rgb.jpg"), "--format", "json", "-o", str(out), "-q", *model_args]) == 0
    assert capsys.readouterr().out.splitlines() == [str(out)]
    assert json.loads(out.read_text())["filename"] == str(tmp_path / "rgb.jpg")  # one input: one object


def test_overlays_of_several_files_go_into_the_output_folder(model_args, tmp_path: Path, capsys) -> None:
    sources = []
    for i in range(2):
        sources.append(tmp_path / f"in{i}.png")
        sources[-1].write_bytes(encode_image(Image.fromarray(gradient_rgb(80 + 16 * i, 48)), "PNG"))
    out = tmp_path / "out"
    assert main(["segment", *map(str, sources), "--format", "overlay", "-o", str(out), *model_args]) == 0
    assert capsys.readouterr().out.splitlines() == [str(out / "in0.overlay.jpg"), str(out / "in1.overlay.jpg")]
    assert [Image.open(out / f"in{i}.overlay.jpg").size for i in range(2)] == [(80, 48), (96, 48)]
    single = tmp_path / "chosen-name.png"
    assert main(["segment", str(sources[0]), "-o", str(single), *model_args]) == 0
    assert Image.open(single).mode == "L"
    assert main(["segment", str(sources[0]), "-o", f"{tmp_path}/new-folder/", *model_args]) == 0
    assert Image.open(tmp_path / "new-folder" / "in0.mask.png").size == (80, 48)


def test_video_masks_zip_is_the_jobs_result_at_every_stride(client, model_args, davis_video: Path, tmp_path: Path,
                                                           capsys) -> None:
    video = tmp_path / "bear.mp4"
    video.write_bytes(davis_video.read_bytes())
    assert main(["segment", str(video), "--steps", "0", "--stride", "2", *model_args]) == 0
    captured = capsys.readouterr()
    written = tmp_path / "bear.masks.zip"
    assert captured.out.splitlines() == [str(written)]
    members = _zip_members(written.read_bytes())
    assert list(members) == ["00000.png", "00002.png", "00004.png"]  # named by source frame index
    assert members == _zip_members(_api_result(client, video, "steps=0&stride=2", "zip"))
    for stage in ("decoding", "segmenting", "encoding"):
        assert f"bear.mp4 {stage}" in captured.err, stage  # one progress bar per stage
    assert video.read_bytes() == davis_video.read_bytes()  # the job deletes its upload, never the user's file


def test_video_adapts_and_writes_a_mask_video(model_args, davis_video: Path, tmp_path: Path, capsys) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(davis_video.read_bytes())
    out = tmp_path / "masks.mp4"
    assert main(["segment", str(video), "--steps", "2", "--format", "video", "-o", str(out), *model_args]) == 0
    err = capsys.readouterr().err
    assert "clip.mp4 flow" in err and "clip.mp4 adapting" in err and "2/2" in err
    with av.open(str(out)) as container:
        frames = [frame.to_ndarray(format="gray") for frame in container.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (240, 426)
    grey = np.stack(frames)
    assert ((grey > 30) & (grey < 225)).mean() < 0.02  # black and white masks, but for H.264 at the edges


def test_video_json_is_the_jobs_json(client, model_args, davis_video: Path, tmp_path: Path, capsys) -> None:
    assert main(["segment", str(davis_video), "--steps", "0", "--max-frames", "4", "--format", "json", "-q",
                 *model_args]) == 0
    document = json.loads(capsys.readouterr().out)
    api = json.loads(_api_result(client, davis_video, "steps=0&max_frames=4", "json"))
    assert document["filename"] == str(davis_video)
    for key in ("frames", "width", "height", "fps", "frame_indices", "masks"):
        assert document[key] == api[key], key
    assert document["frame_indices"] == [0, 1, 2, 3]


def test_adaptation_options_reach_the_job(model_args, davis_video: Path, capsys) -> None:
    assert main(["segment", str(davis_video), "--steps", "2", "--max-frames", "4", "--format", "json", "-q",
                 "--adaptation-interpolation", "1", "--no-appearance-check", "--no-component-check", "--motion-check",
                 "--no-steadiness-check",
                 *model_args]) == 0
    adaptation = json.loads(capsys.readouterr().out)["adaptation"]
    assert adaptation["interpolation"] == 1.0 and adaptation["appearance_check"] is False
    assert adaptation["component_check"] is False and adaptation["motion_check"] is True
    assert adaptation["flicker_before"] is None and adaptation["reverted_by"] is None  # not measured


def test_a_bad_file_fails_alone(model_args, tmp_path: Path, caplog, capsys) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "notes.txt"
    good.write_bytes(image_variants()["rgba.png"])
    bad.write_text("not an image at all")
    with caplog.at_level(logging.ERROR):
        assert main(["segment", str(bad), str(good), *model_args]) == 1
    assert (tmp_path / "good.mask.png").is_file() and not (tmp_path / "notes.mask.png").exists()
    assert f"{bad}: not a recognised image" in caplog.text and "1 of 2 files failed" in caplog.text


def test_an_undecodable_video_fails_alone(model_args, tmp_path: Path, caplog, capsys) -> None:
    good, bad = tmp_path / "good.png", undecodable_video(tmp_path / "zzzz.avi")
    good.write_bytes(image_variants()["rgba.png"])
    with caplog.at_level(logging.ERROR):
        assert main(["segment", str(bad), str(good), *model_args]) == 1
    assert (tmp_path / "good.mask.png").is_file() and not (tmp_path / "zzzz.masks.zip").exists()
    assert f"{bad}: the video's codec cannot be decoded" in caplog.text and "1 of 2 files failed" in caplog.text


@pytest.mark.parametrize(
    ("args", "message"),
    [(["{video}", "--format", "overlay"], "--format overlay is for images; {video} is a video"),
     (["{image}", "--format", "video"], "--format video is for videos; {image} is an image"),
     (["{image}", "-o", "{image}"], "refusing to overwrite the input"),
     (["{folder}/nothing-*.jpg"], "no file matches"),
     (["{folder}/absent.jpg"], "no such file"),
     (["{image}", "--stride", "0"], "--stride and --max-frames >= 1"),
     (["{video}", "--adaptation-interpolation", "0"], "adaptation_interpolation")],
    ids=["overlay-of-video", "video-of-image", "overwrite-input", "empty-glob", "missing", "bad-stride",
         "bad-interpolation"],
)
def test_impossible_requests_fail_before_any_work(args, message, model_args, davis_video, tmp_path, caplog) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(image_variants()["rgb.bmp"])
    values = {"video": str(davis_video), "image": str(image), "folder": str(tmp_path)}
    with caplog.at_level(logging.ERROR):
        assert main(["segment", *(a.format(**values) for a in args), *model_args]) == 2
    assert message.format(**values) in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_kind_follows_the_content_and_gif_frames(tmp_path: Path, davis_video: Path) -> None:
    still, animated = tmp_path / "still.gif", tmp_path / "animated.gif"
    frames = [Image.fromarray(gradient_rgb(40, 30)), Image.fromarray(255 - gradient_rgb(40, 30))]
    frames[0].save(still)
    frames[0].save(animated, save_all=True, append_images=frames[1:], duration=100)
    webm = encode_video([gradient_rgb(64, 48)] * 2, tmp_path / "clip.webm", codec="libvpx-vp9")
    misnamed = tmp_path / "video.jpg"
    misnamed.write_bytes(davis_video.read_bytes())
    assert kind_of(still) is Kind.image and kind_of(animated) is Kind.video
    assert kind_of(webm) is Kind.video and kind_of(misnamed) is Kind.video
    damaged = tmp_path / "damaged.gif"
    damaged.write_bytes(b"GIF89a" + bytes(10))
    assert kind_of(damaged) is Kind.image  # and the image decoder then says what is wrong with it
