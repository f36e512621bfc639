"""POST /adapt-and-segment through the embedded worker, /jobs/{id}, and bad video input."""

from __future__ import annotations

import io
import time
import zipfile

import av
import numpy as np
import pytest
from PIL import Image

from helpers.service_media import encode_image, encode_mjpeg_avi, encode_video, gradient_rgb
from helpers.service_process import metric
from service import rle


def wait_for_end(client, url: str, timeout: float = 60.0) -> dict:
    """Poll a job until it is terminal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(url).json()
        if status["state"] in {"succeeded", "failed", "cancelled"}:
            return status
        time.sleep(0.1)
    raise AssertionError(f"job {url} did not finish: {status}")


def submit(client, data: bytes, name: str = "clip.mp4", query: str = "steps=2"):
    return client.post(f"/adapt-and-segment?{query}", files={"file": (name, data)})


def test_video_job_runs_to_masks_of_every_frame(client, davis_video, service_settings) -> None:
    response = submit(client, davis_video.read_bytes())
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == job["url"] == f"/jobs/{job['id']}"
    assert job["state"] in {"queued", "running"}

    status = wait_for_end(client, job["url"])
    assert status["state"] == "succeeded", status
    assert {"decoding", "flow", "adapting", "segmenting"} <= set(status["timings"])
    assert status["options"]["steps"] == 2

    result = client.get(f"{job['url']}/result?format=json").json()
    assert (result["frames"], result["width"], result["height"]) == (6, 426, 240)
    assert all(rle.decode(m).shape == (240, 426) for m in result["masks"])
    # six frames are too few to hold any out, so the safeguard has nothing to judge by and keeps the steps
    assert result["adaptation"]["decision"] == "kept" and result["adaptation"]["steps"] == 2
    assert result["adaptation"]["heldout_frames"] == 0
    assert result["adaptation"]["interpolation"] == service_settings.adaptation_interpolation == 0.5
    assert result["adaptation"]["runs"] == service_settings.adaptation_runs
    assert result["adaptation"]["seed"] == service_settings.adaptation_seed == 0
    assert result["adaptation"]["appearance_check"] is service_settings.adaptation_appearance_check is True
    assert result["adaptation"]["component_check"] is service_settings.adaptation_component_check is True
    assert result["adaptation"]["motion_check"] is service_settings.adaptation_motion_check is True
    assert service_settings.adaptation_steadiness_check is True  # and the steadiness check measured the masks
    assert 0.0 <= result["adaptation"]["flicker_after"] <= 2 * result["adaptation"]["flicker_before"] <= 2.0
    assert result["adaptation"]["reverted_by"] is None

    archive = zipfile.ZipFile(io.BytesIO(client.get(f"{job['url']}/result").content))
    assert archive.namelist() == [f"{i:05d}.png" for i in range(6)]
    assert Image.open(archive.open("00000.png")).size == (426, 240)

    video = client.get(f"{job['url']}/result?format=video")
    assert video.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(video.content)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6
    assert not list(service_settings.upload_dir.iterdir()), "upload must be removed after the job"


def test_the_adaptation_seed_picks_the_draw_of_the_steps(davis_video, service_settings) -> None:
    """GWM_ADAPTATION_SEED: the same seed repeats a job's steps exactly, another draws other batches."""
    from service.jobs import VideoJobRequest, WorkerConfig, run_video_job
    from service.video import VideoLimits

    request = VideoJobRequest(video_path=str(davis_video), steps=3, stride=1, max_frames=6,
                              limits=VideoLimits(service_settings.max_video_frames, 60.0, 1920))

    def adaptation(seed: int) -> dict:
        config = WorkerConfig.from_settings(service_settings.model_copy(update={"adaptation_seed": seed}))
        return run_video_job(request, config, lambda _: None, lambda: False)["adaptation"]

    first, again, other = adaptation(0), adaptation(0), adaptation(1)
    assert (first["seed"], other["seed"]) == (0, 1)
    assert first["train_losses"] == again["train_losses"]
    assert first["train_losses"] != other["train_losses"]


def test_stride_and_max_frames_select_frames(client, davis_video) -> None:
    job = submit(client, davis_video.read_bytes(), query="steps=0&stride=2&max_frames=2&format=json").json()
    assert wait_for_end(client, job["url"])["state"] == "succeeded"
    result = client.get(f"{job['url']}/result").json()  # format=json chosen at submission
    assert result["frame_indices"] == [0, 2]


def test_temporal_fusion_without_adaptation_computes_flow_and_echoes_the_option(client, davis_video) -> None:
    job = submit(client, davis_video.read_bytes(), query="steps=0&temporal=true&format=json").json()
    status = wait_for_end(client, job["url"])
    assert status["state"] == "succeeded", status
    assert status["options"]["temporal"] is True and "flow" in status["timings"] and "adapting" not in status["timings"]
    result = client.get(f"{job['url']}/result").json()
    assert result["adaptation"] is None and len(result["masks"]) == 6


def test_gif_is_accepted_as_video(client, tmp_path) -> None:
    frames = [Image.fromarray(np.roll(gradient_rgb(64, 48), 4 * i, axis=1)) for i in range(4)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=80)
    job = submit(client, buffer.getvalue(), "anim.gif", "steps=1").json()
    status = wait_for_end(client, job["url"])
    assert status["state"] == "succeeded", status
    assert client.get(f"{job['url']}/result?format=json").json()["frames"] == 4


def test_cancel_a_queued_job(client, davis_video) -> None:
    first = submit(client, davis_video.read_bytes(), query="steps=50").json()
    second = submit(client, davis_video.read_bytes()).json()
    cancelled = client.delete(second["url"]).json()
    assert cancelled["state"] == "cancelled"
    client.delete(first["url"])
    assert wait_for_end(client, first["url"])["state"] == "cancelled"
    code = client.get(f"{second['url']}/result").status_code
    assert code == 409


def _error(response) -> tuple[int, str]:
    body = response.json()
    return response.status_code, body["error"]["message"]


def test_not_a_video_image_and_audio_are_415(client, tmp_path) -> None:
    assert _error(submit(client, b"plain text, no video"))[0] == 415
    code, message = _error(submit(client, encode_image(Image.fromarray(gradient_rgb()), "JPEG"), "a.jpg"))
    assert code == 415 and "/segment" in message

    audio_path = tmp_path / "tone.m4a"
    with av.open(str(audio_path), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=8000)
        samples = np.zeros((1, 1024), dtype=np.float32)
        for _ in range(8):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 8000
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    code, message = _error(submit(client, audio_path.read_bytes(), "tone.mp4"))
    assert code == 415 and "audio-only" in message


def test_corrupt_video_fails_cleanly(client, davis_video) -> None:
    data = bytearray(davis_video.read_bytes())
    data[len(data) // 3 :] = bytes(len(data) - len(data) // 3)  # zero the stream after the first third
    response = submit(client, bytes(data))
    if response.status_code == 202:
        status = wait_for_end(client, response.json()["url"])
        assert status["state"] in {"failed", "succeeded"}
        assert status["state"] == "succeeded" or status["error"]
    else:
        assert response.status_code in {400, 415}


def test_video_limits(client, tmp_path, service_settings) -> None:
    tall = encode_video([np.zeros((2048, 64, 3), np.uint8)] * 2, tmp_path / "tall.mp4")
    code, message = _error(submit(client, tall.read_bytes()))
    assert code == 413 and "longest side" in message
    code, message = _error(submit(client, b"x", query=f"steps={service_settings.max_adaptation_steps + 1}"))
    assert code == 422 and "steps" in message
    assert submit(client, b"x", query="stride=0").status_code == 422


def test_single_frame_video_fails_with_message_unless_no_step_is_asked(client, tmp_path) -> None:
    one = encode_video([gradient_rgb(64, 48)], tmp_path / "one.mp4").read_bytes()
    status = wait_for_end(client, submit(client, one).json()["url"])
    assert status["state"] == "failed" and "two frames" in status["error"] and "steps=0" in status["error"]
    status = wait_for_end(client, submit(client, one, query="steps=0&temporal=true").json()["url"])
    assert status["state"] == "succeeded", status  # nothing to fuse with: the frame's own mask
    assert client.get(f"{status['url']}/result?format=json").json()["frames"] == 1


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/jobs/0123456789abcdef0123456789abcdef", 404),
        ("/jobs/not-an-id", 400),
        ("/jobs/..%5C..%5Cetc%5Cpasswd", 400),
        ("/jobs/..%2F..%2Fetc%2Fpasswd", 404),  # decodes to another path: no route
        ("/jobs/%2E%2E/result", 400),
    ],
)
def test_unknown_and_malformed_job_ids(client, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert "error" in response.json()


def test_tiny_video_is_refused_at_upload(client, tmp_path, service_settings) -> None:
    """Below 16 px a side, optical flow fails inside OpenCV: say so at upload, not as a failed job."""
    thin = encode_video([gradient_rgb(64, 8)] * 3, tmp_path / "thin.mp4")
    code, message = _error(submit(client, thin.read_bytes()))
    assert code == 400 and "64x8" in message and "shortest side" in message, message
    assert not list(service_settings.upload_dir.iterdir())


def test_resolution_change_midstream_gives_masks_of_the_first_size(client, tmp_path) -> None:
    frames = [np.roll(gradient_rgb(64, 48), 3 * i, axis=1) for i in range(3)]
    frames += [np.roll(gradient_rgb(96, 72), 3 * i, axis=1) for i in range(3)]
    avi = encode_mjpeg_avi(frames, tmp_path / "webcam.avi")
    job = submit(client, avi.read_bytes(), "webcam.avi", "steps=1").json()
    status = wait_for_end(client, job["url"])
    assert status["state"] == "succeeded", status

    result = client.get(f"{job['url']}/result?format=json").json()
    assert (result["frames"], result["width"], result["height"]) == (6, 64, 48)
    assert [rle.decode(m).shape for m in result["masks"]] == [(48, 64)] * 6
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"{job['url']}/result").content))
    assert {Image.open(archive.open(name)).size for name in archive.namelist()} == {(64, 48)}
    video = client.get(f"{job['url']}/result?format=video")
    assert video.status_code == 200, video.text
    with av.open(io.BytesIO(video.content)) as container:
        assert [(f.width, f.height) for f in container.decode(video=0)] == [(64, 48)] * 6


def test_phone_rotation_is_applied(client, tmp_path) -> None:
    """Stored 64x48 with a 90° display rotation: frames and masks come back 48x64, as the video is shown."""
    from service.video import VideoLimits, decode_frames

    stored = [np.roll(gradient_rgb(64, 48), 2 * i, axis=1) for i in range(4)]
    path = encode_video(stored, tmp_path / "portrait.mp4", rotation=90)
    decoded = decode_frames(path, VideoLimits(30, 60.0, 1920))
    assert decoded.frames[0].shape == (64, 48, 3)
    upright = np.rot90(stored[0]).astype(int)  # the display matrix turns the picture counter-clockwise
    assert np.abs(decoded.frames[0].astype(int) - upright).mean() < 8  # H.264 is lossy, not wrong

    job = submit(client, path.read_bytes(), "portrait.mp4", "steps=1").json()
    assert wait_for_end(client, job["url"])["state"] == "succeeded"
    result = client.get(f"{job['url']}/result?format=json").json()
    assert (result["width"], result["height"]) == (48, 64)
    assert {rle.decode(m).shape for m in result["masks"]} == {(64, 48)}


def test_packaged_result_is_built_once(client, davis_video) -> None:
    job = submit(client, davis_video.read_bytes(), query="steps=0").json()
    assert wait_for_end(client, job["url"])["state"] == "succeeded"

    def cache(outcome: str) -> float:
        return metric(client.get("/metrics").text, "gwm_result_cache_total", default=0.0, outcome=outcome)

    for format in ("zip", "video"):
        hits, misses = cache("hit"), cache("miss")
        first = client.get(f"{job['url']}/result?format={format}")
        second = client.get(f"{job['url']}/result?format={format}")
        assert first.status_code == second.status_code == 200
        assert first.content == second.content and first.headers["etag"] == second.headers["etag"]
        assert (cache("miss") - misses, cache("hit") - hits) == (1, 1), format
