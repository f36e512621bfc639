"""Receiving an uploaded video straight into the data directory, within a byte limit per upload and for all of them.

The multipart body is parsed as it streams in (python-multipart, the parser Starlette itself uses),
and the file part is written to ``directory/<stem><suffix>`` chunk by chunk. Starlette's own form
parsing would first spool the whole file to ``$TMPDIR``, outside the directory's budget, and only
then hand it over: concurrent uploads took disk nobody counted, and a full directory was noticed
after the last byte. Here the budget is checked as the bytes arrive, and the 413 or 503 comes at
once.

Files normally leave with their job (see ``service.queue``); the maintenance sweep
(:mod:`service.maintenance`) catches uploads whose job will never run again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from service.errors import BadInput, InvalidParameter, TooLarge, Unavailable

logger = logging.getLogger(__name__)

#: The directory is measured again each time this many more bytes were written.
_CHECK_EVERY_BYTES = 1024 * 1024
_SAFE_SUFFIXES = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif", ".m4v"})


def directory_bytes(directory: Path) -> int:
    """Bytes of the files in ``directory`` now, partial uploads included."""
    total = 0
    for path in directory.iterdir():
        try:
            total += path.stat().st_size
        except FileNotFoundError:  # a job finished and removed it meanwhile
            continue
    return total


def upload_request_body(field: str, description: str) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a route that reads one file with :func:`receive_upload`: what
    FastAPI would declare for an ``UploadFile`` parameter, so the docs page still offers a file picker."""
    schema = {
        "type": "object",
        "properties": {field: {"type": "string", "contentMediaType": "application/octet-stream",
                               "title": field.title(), "description": description}},
        "required": [field],
    }
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


class _FilePart:
    """Parser callbacks that collect the bytes of the part named ``field``, and its file name.

    The parser calls them synchronously from ``write``; the bytes wait in ``pending`` until the
    caller takes them, one network chunk at a time."""

    def __init__(self, field: str) -> None:
        self._field = field.encode()
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._inside = False
        self.found = False
        self.finished = False
        self.filename = ""
        self.pending = bytearray()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if options.get(b"name") != self._field:
            return  # another form field: its bytes are read past, never kept
        if self.found:
            raise InvalidParameter(f"send one video per request: the form has more than one {self._field.decode()!r}")
        self.found, self._inside = True, True
        self.filename = options.get(b"filename", b"").decode("utf-8", "replace")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._inside:
            self.pending.extend(data[start:end])

    def _part_end(self) -> None:
        if self._inside:
            self._inside, self.finished = False, True


class _BudgetedFile:
    """The upload's file in the data directory: opened with its first byte, written within the
    per-upload and the directory budgets, removed by :meth:`discard` on any error."""

    def __init__(self, directory: Path, stem: str, max_bytes: int, max_directory_bytes: int, retry_after: int) -> None:
        self._directory = directory
        self._stem = stem
        self._max_bytes = max_bytes
        self._max_directory_bytes = max_directory_bytes
        self._retry_after = retry_after
        self._out: BinaryIO | None = None
        self._written = 0
        self._unchecked = 0
        self.path: Path | None = None

    def write(self, data: bytes | bytearray, filename: str) -> None:
        """Append ``data``; 413 past the upload's limit, 503 when the directory has no room for it."""
        if self._out is None:
            suffix = Path(filename).suffix.lower()
            self.path = self._directory / f"{self._stem}{suffix if suffix in _SAFE_SUFFIXES else '.bin'}"
            self._out = self.path.open("wb")
            self._unchecked = _CHECK_EVERY_BYTES  # the first bytes are checked too: the directory may be full
        self._written += len(data)
        self._unchecked += len(data)
        if self._written > self._max_bytes:
            raise TooLarge(f"upload exceeds the limit of {self._max_bytes} bytes")
        if self._unchecked >= _CHECK_EVERY_BYTES:
            self._out.flush()  # the directory's size must include what this upload wrote so far
            if directory_bytes(self._directory) + len(data) > self._max_directory_bytes:
                raise Unavailable(
                    f"no room for this upload: videos waiting for workers take up to {self._max_directory_bytes} bytes",
                    retry_after=self._retry_after,
                )
            self._unchecked = 0
        self._out.write(data)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()

    def discard(self) -> None:
        self.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


async def receive_upload(
    request: Request, field: str, directory: Path, stem: str, max_bytes: int, max_directory_bytes: int,
    retry_after: int,
) -> Path:
    """Stream the file in form field ``field`` of a multipart ``request`` to ``directory/<stem><suffix>``.

    422 without a multipart body holding that field; 400 for an empty file or a malformed body; 413
    beyond ``max_bytes``; 503 with ``Retry-After`` when the directory would hold more than
    ``max_directory_bytes``. The directory is measured every megabyte written, so uploads arriving
    together see each other's partial files and cannot overshoot by more than that each. The partial
    file is removed on any error, a client that goes away included.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise InvalidParameter(f"{field}: send the video as multipart/form-data, in a field named {field!r}")
    part = _FilePart(field)
    parser = MultipartParser(options[b"boundary"], part.callbacks())
    file = _BudgetedFile(directory, stem, max_bytes, max_directory_bytes, retry_after)
    try:
        async for chunk in request.stream():
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise BadInput(f"the multipart body is malformed: {exc}") from exc
            if part.pending:
                file.write(part.pending, part.filename)
                part.pending.clear()
        file.close()
        if not part.found:
            raise InvalidParameter(f"{field}: Field required (a multipart form field named {field!r} with the video)")
        if not part.finished:
            raise BadInput("the upload ended before its file did")
        if file.path is None:  # opened with the file's first byte
            raise BadInput("the uploaded file is empty")
    except BaseException:
        file.discard()
        raise
    return file.path
