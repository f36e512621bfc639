"""POST /adapt-and-segment reads its multipart body as it streams in (service/uploads.py): straight to
the data directory, the budget checked as bytes arrive, clear 4xx errors for forms that are wrong."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import pytest
from test_service_images import _error
from test_service_video import wait_for_end

from helpers.browser import serve

BOUNDARY = "gwmtestboundary"


def _multipart(*parts: tuple[str, str | None, bytes], close: bool = True) -> bytes:
    """A multipart/form-data body of (field name, file name or None, content) parts."""
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return body + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def _post(client, body: bytes, content_type: str = f"multipart/form-data; boundary={BOUNDARY}"):
    return client.post("/adapt-and-segment?steps=0", content=body, headers={"content-type": content_type})


def test_a_full_data_dir_answers_503_before_the_upload_has_ended(service_settings) -> None:
    """The client has sent 3 MB of a 6 MB upload, the directory's budget is 512 kB, measured every
    megabyte: the 503 comes then, not after the last byte (form parsing would first have spooled it
    all to $TMPDIR)."""
    settings = service_settings.model_copy(update={"max_upload_dir_bytes": 512 * 1024, "retry_after_seconds": 7})
    preamble = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n"
                "\r\n").encode()
    declared = len(preamble) + 6 * 1024 * 1024
    with serve(settings) as url:
        address = urlsplit(url)
        with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
            connection.sendall(
                (f"POST /adapt-and-segment HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Length: {declared}\r\n"
                 f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode() + preamble)
            for _ in range(48):
                connection.sendall(b"\0" * 65536)
            started = time.monotonic()
            reply = b""
            while b"}" not in reply:  # headers, then the JSON body: times out (10 s) if the server waits for the rest
                received = connection.recv(65536)
                assert received, f"the server closed the connection after {reply!r}"
                reply += received
            reply = reply.decode("latin-1")
        assert reply.startswith("HTTP/1.1 503"), reply
        assert "retry-after: 7" in reply.lower() and "no room for this upload" in reply
        assert time.monotonic() - started < 5
        deadline = time.monotonic() + 5
        while list(settings.upload_dir.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not list(settings.upload_dir.iterdir()), "the partial upload was left behind"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (_multipart(("video", "clip.mp4", b"\0" * 64)), None, 422, "file"),  # the wrong field name
        (b'{"file": "clip.mp4"}', "application/json", 422, "multipart/form-data"),
        (_multipart(("file", "a.mp4", b"\0" * 64), ("file", "b.mp4", b"\0" * 64)), None, 422, "one video"),
        (_multipart(("file", "clip.mp4", b"\0" * 64), close=False)[:-40], None, 400, "ended before"),
        (_multipart(("file", "clip.mp4", b"")), None, 400, "empty"),
        (b"--" + BOUNDARY.encode() + b"\r\nno colon here\r\n\r\n", None, 400, "malformed"),
    ],
    ids=["wrong-field", "json", "two-files", "truncated", "empty-file", "malformed"],
)
def test_wrong_forms_get_a_clear_4xx(client, service_settings, body: bytes, content_type: str | None, status: int,
                                     words: str) -> None:
    response = _post(client, body) if content_type is None else _post(client, body, content_type)
    code, message = _error(response)
    assert code == status and words in message, message
    assert not list(service_settings.upload_dir.iterdir())


def test_other_form_fields_around_the_video_are_read_past(client, davis_video, service_settings) -> None:
    body = _multipart(("note", None, b"a field the API does not know"), ("file", "bear.mp4", davis_video.read_bytes()),
                      ("extra", "other.bin", b"\1" * 5000))
    response = _post(client, body)
    assert response.status_code == 202, response.text
    status = wait_for_end(client, response.json()["url"])
    assert status["state"] == "succeeded", status
    assert client.get(f"{status['url']}/result?format=json").json()["frames"] == 6
