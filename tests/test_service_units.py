"""Service pieces on their own: RLE, pixel conversion, provider choice, API key, streaming size limit, metrics,
the pixel budget, and what error messages may show."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from helpers.paths import REPO
from helpers.service_media import image_variants
from service import rle
from service.imaging import to_rgb
from service.inference import choose_providers


@pytest.mark.parametrize("seed", range(20))
def test_rle_round_trip(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = rng.integers(1, 50, size=2)
    mask = rng.random((height, width)) < rng.random()
    assert np.array_equal(rle.decode(rle.encode(mask)), mask)


def test_rle_matches_pycocotools_strings() -> None:
    assert rle.encode(np.ones((2, 2), bool)) == {"size": [2, 2], "counts": "04"}
    assert rle.encode(np.zeros((3, 4), bool)) == {"size": [3, 4], "counts": "<"}


def test_sixteen_bit_grey_keeps_its_range() -> None:
    values = np.array([[0, 32896, 65535]], dtype=np.uint16)
    assert to_rgb(Image.fromarray(values))[0, :, 0].tolist() == [0, 128, 255]


def test_transparent_pixels_become_white() -> None:
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 1] = (10, 20, 30, 255)
    assert to_rgb(Image.fromarray(rgba, "RGBA")).tolist() == [[[255, 255, 255], [10, 20, 30]]]


def test_provider_choice() -> None:
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", both) == both
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("cpu", both) == ["CPUExecutionProvider"]
    with pytest.raises(RuntimeError):
        choose_providers("cuda", ["CPUExecutionProvider"])


def test_api_key_protects_everything_but_health(service_settings) -> None:
    from pydantic import SecretStr

    from service.api.app import create_app

    settings = service_settings.model_copy(update={"api_key": SecretStr("s3cret")})
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/docs").status_code == 200  # where a browser user enters the key
        for path in ("/metrics", "/jobs/0123456789abcdef0123456789abcdef", "/no-such-route"):
            response = client.get(path)
            assert response.status_code == 401 and "X-API-Key" in response.json()["error"]["message"]
        assert client.get("/metrics", headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.get("/metrics", headers={"X-API-Key": "s3cret"}).status_code == 200


def test_streamed_body_without_length_is_cut_at_limit(service_settings) -> None:
    from service.api.app import create_app

    settings = service_settings.model_copy(update={"max_upload_bytes": 64 * 1024})
    boundary = "gwmboundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'.encode()

    def chunks():  # a generator body is sent chunked, without Content-Length
        yield head
        for _ in range(100):
            yield b"\0" * 4096

    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/segment", content=chunks(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


def test_every_error_has_one_shape_and_rendering(service_settings) -> None:
    """The 401 and 413 of the ASGI guards are rendered by the same JSONResponse as the handlers' errors."""
    from pydantic import SecretStr

    from service.api.app import create_app

    settings = service_settings.model_copy(update={"api_key": SecretStr("s3cret"), "max_upload_bytes": 1024})
    key = {"X-API-Key": "s3cret"}
    with TestClient(create_app(settings)) as client:
        answers = {
            401: client.get("/metrics"),
            413: client.post("/segment", headers=key, files={"file": ("a.png", b"\0" * 4096)}),
            400: client.get("/jobs/not-an-id", headers=key),
            404: client.get("/no-such-route", headers=key),
            405: client.put("/segment", headers=key),
            422: client.post("/segment", headers=key),
        }
    codes = {401: "unauthorized", 413: "too_large", 400: "bad_request", 404: "not_found", 405: "method_not_allowed",
             422: "invalid_parameter"}
    for status, response in answers.items():
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert list(body) == ["error"] and list(body["error"]) == ["status", "code", "message"]
        assert body["error"]["status"] == status and body["error"]["code"] == codes[status]
        assert response.content == json.dumps(body, separators=(",", ":")).encode()  # one rendering


def test_metrics_count_requests_by_route_template(client) -> None:
    client.post("/segment", files={"file": ("a.png", image_variants()["rgba.png"])})
    client.get("/jobs/0123456789abcdef0123456789abcdef")
    text = client.get("/metrics").text
    assert 'gwm_http_requests_total{method="POST",route="/segment",status="200"}' in text
    assert 'route="/jobs/{job_id}",status="404"' in text
    assert "gwm_queue_depth" in text


def test_missing_model_is_503_not_a_crash(service_settings, tmp_path) -> None:
    from service.api.app import create_app

    settings = service_settings.model_copy(update={"model_path": tmp_path / "absent.onnx"})
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "absent.onnx" in ready.json()["model"]["error"]
        assert str(tmp_path) not in ready.text, "an unauthenticated endpoint showed a server path"
        response = client.post("/segment", files={"file": ("a.png", image_variants()["rgba.png"])})
        assert response.status_code == 503 and "model not loaded" in response.json()["error"]["message"]


def test_web_page_and_docs_are_served(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/segment", "/adapt-and-segment", "/jobs/{job_id}", "/jobs/{job_id}/result"} <= set(paths)


def test_readyz_reports_the_merges_and_the_settings_override_them(service_settings) -> None:
    from service.api.app import create_app

    with TestClient(create_app(service_settings)) as client:
        # photos: framed by default; video frames: what the tiny model records
        model = client.get("/readyz").json()["model"]
        assert model["merge"] == {"images": "framed", "video": "spectral"}
        assert (model["input_size"], model["keep_aspect"]) == ([64, 96], True)  # as the tiny model's spec says
        assert model["video_input_size"] == [64, 96]  # a spec that records no video size: its input size
    settings = service_settings.model_copy(update={"merge": "border", "image_merge": "spectral"})
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").json()["model"]["merge"] == {"images": "spectral", "video": "border"}
        response = client.post("/segment", files={"file": ("a.png", image_variants()["rgba.png"])})
        assert response.status_code == 200


def test_settings_reject_an_unknown_flow_method_at_start_up(monkeypatch) -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    monkeypatch.setenv("GWM_FLOW_METHOD", "dis-fine")
    assert Settings().flow_method == "dis-fine"
    monkeypatch.setenv("GWM_FLOW_METHOD", "nope")
    with pytest.raises(ValidationError, match="unknown flow method"):
        Settings()


def test_flow_size_setting_reaches_the_worker_and_rejects_sizes_out_of_range(monkeypatch) -> None:
    from pydantic import ValidationError

    from service.jobs import WorkerConfig
    from service.settings import Settings

    assert WorkerConfig.from_settings(Settings()).flow_size is None  # the flow method's own
    monkeypatch.setenv("GWM_FLOW_SIZE", "[128, 224]")
    assert WorkerConfig.from_settings(Settings()).flow_size == (128, 224)
    for bad in ("[8, 224]", "[128, 4000]"):
        monkeypatch.setenv("GWM_FLOW_SIZE", bad)
        with pytest.raises(ValidationError, match="GWM_FLOW_SIZE sides must be within"):
            Settings()


def test_settings_reject_default_steps_above_the_limit_at_start_up(monkeypatch) -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    monkeypatch.setenv("GWM_MAX_ADAPTATION_STEPS", "10")
    with pytest.raises(ValidationError, match="GWM_DEFAULT_ADAPTATION_STEPS=20 exceeds"):
        Settings()
    monkeypatch.setenv("GWM_DEFAULT_ADAPTATION_STEPS", "10")
    assert Settings().default_adaptation_steps == 10


def test_settings_take_raft_only_with_its_weights(monkeypatch, tmp_path) -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    monkeypatch.setenv("GWM_FLOW_METHOD", "raft")
    with pytest.raises(ValidationError, match="GWM_RAFT_WEIGHTS"):
        Settings()
    monkeypatch.setenv("GWM_RAFT_WEIGHTS", str(tmp_path / "absent.pth"))
    with pytest.raises(ValidationError, match="GWM_RAFT_WEIGHTS"):
        Settings()
    (tmp_path / "raft.pth").write_bytes(b"weights")
    monkeypatch.setenv("GWM_RAFT_WEIGHTS", str(tmp_path / "raft.pth"))
    monkeypatch.setenv("GWM_DEVICE", "cuda")
    settings = Settings()
    assert settings.flow_options() == {"weights": str(tmp_path / "raft.pth"), "device": "cuda"}
    monkeypatch.setenv("GWM_FLOW_METHOD", "dis")
    assert Settings().flow_options() == {}


def test_raft_compose_override_gives_workers_the_weights_it_mounts(monkeypatch, tmp_path) -> None:
    """docker-compose.raft.yml: the worker's environment names the file it mounts, its Settings accept
    it, the host file must be named (no silent empty mount) and the API is left alone."""
    import yaml

    from service.settings import Settings

    override = yaml.safe_load((REPO / "docker-compose.raft.yml").read_text())
    assert set(override["services"]) == {"worker"}
    worker = override["services"]["worker"]
    (mount,) = worker["volumes"]
    source, target, mode = mount.rsplit(":", 2)
    assert source.startswith("${GWM_RAFT_WEIGHTS_FILE:?") and mode == "ro"
    assert worker["environment"]["GWM_RAFT_WEIGHTS"] == target
    weights = tmp_path / "raft-small.pth"
    weights.write_bytes(b"weights")
    for name, value in worker["environment"].items():
        monkeypatch.setenv(name, str(weights) if value == target else value)
    settings = Settings()
    assert settings.flow_method == "raft" and settings.flow_options()["weights"] == str(weights)


def test_default_data_dir_is_per_user_and_private(tmp_path, monkeypatch) -> None:
    import getpass
    import stat

    from service.settings import Settings

    monkeypatch.delenv("GWM_DATA_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # gettempdir() reads TMPDIR again
    settings = Settings()
    assert settings.data_dir == tmp_path / f"gwm-service-{getpass.getuser()}"
    uploads = settings.upload_dir
    assert uploads == settings.data_dir / "uploads" and uploads.is_dir()
    for path in (settings.data_dir, uploads):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    settings.data_dir.chmod(0o777)  # as if someone else had made it first, open to all
    with pytest.raises(PermissionError, match="open to others"):
        _ = Settings().result_dir


def test_readyz_names_the_model_file_without_its_directory(client, service_settings) -> None:
    body = client.get("/readyz").json()
    assert body["model"]["path"] == service_settings.model_path.name
    assert str(service_settings.model_path.parent) not in client.get("/readyz").text


def test_error_messages_lose_absolute_paths() -> None:
    from service.errors import redact_paths

    message = "FileNotFoundError: [Errno 2] No such file or directory: '/srv/gwm/weights/missing.pt'"
    assert redact_paths(message) == "FileNotFoundError: [Errno 2] No such file or directory: 'missing.pt'"
    for kept in ("post videos to /adapt-and-segment", "see http://host/a/b", "relative/dir/file.mp4"):
        assert redact_paths(kept) == kept


def _run(coroutine):
    return asyncio.run(coroutine)


def test_pixel_budget_admits_in_order_and_refuses_after_the_wait() -> None:
    from service.admission import PixelBudget
    from service.errors import TooManyRequests

    async def scenario() -> list[str]:
        budget = PixelBudget(capacity=100, max_wait_s=2.0, retry_after_s=7)
        events: list[str] = []

        async def request(name: str, pixels: int, hold_s: float) -> None:
            try:
                async with budget.hold(pixels):
                    events.append(f"{name} in")
                    await asyncio.sleep(hold_s)
            except TooManyRequests as exc:
                events.append(f"{name} 429 retry after {exc.retry_after}")

        big = asyncio.create_task(request("big", 80, 0.2))
        await asyncio.sleep(0.01)
        huge = asyncio.create_task(request("huge", 100, 0.05))  # waits for big, and small waits behind it
        await asyncio.sleep(0.01)
        small = asyncio.create_task(request("small", 10, 0.0))  # would fit now, but huge came first
        await asyncio.sleep(0.01)
        late = asyncio.create_task(request("late", 100, 0.0))
        stuck = PixelBudget(capacity=10, max_wait_s=0.05, retry_after_s=7)
        async with stuck.hold(10):
            try:
                async with stuck.hold(1):
                    events.append("never")
            except TooManyRequests as exc:
                events.append(f"stuck 429 retry after {exc.retry_after}")
        await asyncio.gather(big, huge, small, late)
        assert budget.in_flight == 0 and stuck.in_flight == 0
        return events

    assert _run(scenario()) == ["big in", "stuck 429 retry after 7", "huge in", "small in", "late in"]


def test_pixel_budget_returns_what_a_cancelled_waiter_held() -> None:
    from service.admission import PixelBudget

    async def scenario() -> int:
        budget = PixelBudget(capacity=10, max_wait_s=5, retry_after_s=1)
        async with budget.hold(10):
            waiter = asyncio.create_task(budget.hold(5).__aenter__())
            await asyncio.sleep(0.01)
            waiter.cancel()  # the client hung up while waiting
            await asyncio.gather(waiter, return_exceptions=True)
        async with budget.hold(10):  # everything is free again
            return budget.in_flight

    assert _run(scenario()) == 10


def test_concurrent_first_requests_of_a_package_build_it_once(tmp_path) -> None:
    import threading
    import time

    from service.results import ResultCache

    cache, builds = ResultCache(tmp_path), []

    def build() -> bytes:
        builds.append(threading.get_ident())
        time.sleep(0.2)  # a package of 300 full-size masks takes seconds
        return b"zip"

    paths: list = []
    threads = [threading.Thread(target=lambda: paths.append(cache.get("job", "zip", build))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and len(paths) == 4 and {p.read_bytes() for p in paths} == {b"zip"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.zip"] and not cache._locks


def test_an_embedded_server_has_its_data_dir_to_itself(service_settings) -> None:
    """Its sweep deletes uploads it does not know: a second server on the directory would lose jobs."""
    from service.api.app import create_app
    from service.data_lock import DataDirInUse

    redis_settings = service_settings.model_copy(update={"queue_mode": "redis"})
    with TestClient(create_app(service_settings)) as first:
        assert first.get("/healthz").status_code == 200
        for other in (service_settings, redis_settings):
            with (pytest.raises(DataDirInUse, match="give this server its own GWM_DATA_DIR"),
                  TestClient(create_app(other))):
                pass
    with TestClient(create_app(service_settings)) as again:  # released at shutdown
        assert again.get("/healthz").status_code == 200
