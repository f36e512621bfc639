"""Access control and safe loading: the optional API key guards every non-health route (job results
included), is compared in constant time and never reaches a log; checkpoints cannot run code.
"""

from __future__ import annotations

import pickle

import httpx
import pytest
import torch
from conftest import API_KEY as KEY  # the key of the keyed_* fixtures
from fastapi.testclient import TestClient
from test_reliability_inputs import small_clip
from test_service_video import submit, wait_for_end

from helpers.service_process import running_server

WRONG = "gwm-test-key-0000000000000000"
PUBLIC = {"/healthz", "/readyz", "/docs", "/redoc", "/openapi.json"}  # docs: where the key is entered


def _routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every route in the API, job ids filled in, plus the docs pages."""
    spec = client.get("/openapi.json").json()
    job_id = "0123456789abcdef0123456789abcdef"
    routes = [
        (method.upper(), path.replace("{job_id}", job_id))
        for path, operations in spec["paths"].items()
        for method in operations
    ]
    return routes + [("GET", "/docs"), ("GET", "/redoc"), ("GET", "/openapi.json")]


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": WRONG}, {"X-API-Key": ""}, {"X-API-Key": KEY.upper()}, {"X-API-Key": KEY[:-1]},
     {"X-API-Key": "cl\xe9".encode("latin-1")}, {"Authorization": f"Bearer {KEY}"}],
    ids=["none", "wrong", "empty", "upper", "prefix", "latin1", "bearer"],
)
def test_every_non_health_route_answers_401_without_the_key(keyed_client, headers) -> None:
    routes = _routes(keyed_client)
    assert {path for _, path in routes} >= {"/segment", "/adapt-and-segment", "/metrics"}
    for method, path in routes:
        response = keyed_client.request(method, path, headers=headers)
        if path in PUBLIC:
            assert response.status_code in {200, 503}, path
        else:
            assert response.status_code == 401, (method, path)
            assert response.json()["error"]["code"] == "unauthorized"


def test_job_and_its_result_are_reachable_only_with_the_key(keyed_client, tmp_path) -> None:
    headers = {"X-API-Key": KEY}
    clip = small_clip(tmp_path / "a.mp4").read_bytes()
    assert submit(keyed_client, clip, query="steps=0").status_code == 401
    keyed_client.headers.update(headers)
    url = submit(keyed_client, clip, query="steps=0").json()["url"]
    assert wait_for_end(keyed_client, url)["state"] == "succeeded"
    del keyed_client.headers["X-API-Key"]
    for path in (url, f"{url}/result", f"{url}/result?format=json"):
        assert keyed_client.get(path).status_code == 401
        assert keyed_client.get(path, headers={"X-API-Key": WRONG}).status_code == 401
        assert keyed_client.get(path, headers=headers).status_code == 200
    assert keyed_client.delete(url).status_code == 401


def test_key_is_compared_in_constant_time(keyed_client, monkeypatch) -> None:
    """The guard must use hmac.compare_digest (time independent of where the strings differ)."""
    from service.api import middleware

    calls: list[tuple[bytes, bytes]] = []
    real = middleware.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(middleware.hmac, "compare_digest", spy)
    assert keyed_client.get("/metrics", headers={"X-API-Key": WRONG}).status_code == 401
    assert keyed_client.get("/metrics", headers={"X-API-Key": KEY}).status_code == 200
    assert calls == [(WRONG.encode(), KEY.encode()), (KEY.encode(), KEY.encode())]


@pytest.mark.slow
def test_keys_never_appear_in_logs(keyed_settings, tmp_path) -> None:
    """A real `gwm serve` at debug level, with access logs: neither the key nor a wrong one is logged."""
    log = tmp_path / "serve.log"
    with running_server(keyed_settings, log, log_level="debug") as server, httpx.Client(base_url=server.url) as http:
        for key in (WRONG, KEY):
            headers = {"X-API-Key": key}
            http.get("/metrics", headers=headers)
            http.get("/jobs/0123456789abcdef0123456789abcdef", headers=headers)
            http.post("/segment", headers=headers, files={"file": ("a.txt", b"not an image")})
        assert http.get("/metrics", headers={"X-API-Key": KEY}).status_code == 200
    text = server.logs()
    assert '"GET /metrics HTTP/1.1" 401' in text and '"GET /metrics HTTP/1.1" 200' in text  # logs were captured
    assert KEY not in text and WRONG not in text
    assert KEY[-12:] not in text and WRONG[-12:] not in text  # not even a fragment


class _Payload:
    """Unpickling this creates a file: the classic code-execution-by-checkpoint attack, made harmless."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_checkpoint_is_refused(tmp_path) -> None:
    from training.checkpoint import load_model

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload(str(marker)), "spec": {"architecture": "unet", "options": {}}}, path)
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only load failed"):
        load_model(path)
    assert not marker.exists(), "the checkpoint executed code while loading"
