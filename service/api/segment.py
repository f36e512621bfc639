"""``POST /segment``: foreground masks for one or more uploaded images.

One file answers with one PNG mask, JPEG overlay or JSON object; several
files (repeat the ``file`` field) answer with a ZIP of PNGs or JPEGs, or a
JSON list, in upload order. Errors name the offending file.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from service import encoding
from service.api.state import Segmenter, State
from service.errors import ServiceError, TooLarge
from service.imaging import decode_image
from service.inference import OnnxSegmenter, Segmentation

router = APIRouter(tags=["images"])


class ImageFormat(StrEnum):
    """Response formats of /segment."""

    png = "png"
    json = "json"
    overlay = "overlay"


_MEDIA = {ImageFormat.png: ("image/png", "png"), ImageFormat.overlay: ("image/jpeg", "jpg")}


@router.post(
    "/segment",
    responses={
        200: {"content": {"image/png": {}, "image/jpeg": {}, "application/zip": {}, "application/json": {}}},
        400: {"description": "empty, truncated or corrupt image"},
        413: {"description": "too large (bytes, pixels, decompression bomb, too many images)"},
        415: {"description": "not a supported image"},
    },
)
async def segment(
    state: State,
    segmenter: Segmenter,
    file: Annotated[list[UploadFile], File(description="Image(s): JPEG, PNG, WebP, BMP, TIFF, GIF (first frame).")],
    format: Annotated[ImageFormat, Query(description="png mask, json summary with RLE, or overlay JPEG")] = ImageFormat.png,
    regions: Annotated[bool, Query(description="json only: add per-region soft scores")] = False,
) -> Response:
    """Segment the foreground of each image at the image's own (EXIF-oriented) resolution."""
    limit = state.settings.max_images_per_request
    if len(file) > limit:
        raise TooLarge(f"{len(file)} images in one request; the limit is {limit}")
    names = [upload.filename or f"image-{i}" for i, upload in enumerate(file)]
    return await run_in_threadpool(
        _segment_files, segmenter, file, names, format, regions, state.settings.max_image_pixels
    )


def _segment_files(
    segmenter: OnnxSegmenter,
    uploads: list[UploadFile],
    names: list[str],
    format: ImageFormat,
    regions: bool,
    max_pixels: int,
) -> Response:
    """Decode, segment and encode in one worker thread: CPU work stays off the event loop."""
    images = [_decode(upload, name, max_pixels) for upload, name in zip(uploads, names, strict=True)]
    results = segmenter.segment(images, with_regions=regions and format is ImageFormat.json)
    if format is ImageFormat.json:
        items = [{"filename": name, **encoding.mask_summary(r.mask, r.regions)} for name, r in zip(names, results)]
        return JSONResponse(items[0] if len(items) == 1 else items)
    payloads = [_render(format, image, result) for image, result in zip(images, results, strict=True)]
    media_type, extension = _MEDIA[format]
    if len(payloads) == 1:
        return Response(payloads[0], media_type=media_type)
    entries = [(f"{i:03d}-{Path(name).stem}.{extension}", data) for i, (name, data) in enumerate(zip(names, payloads))]
    return Response(
        encoding.zip_files(entries),
        media_type="application/zip",
        headers={"Content-Disposition": 'attachment; filename="masks.zip"'},
    )


def _decode(upload: UploadFile, name: str, max_pixels: int) -> np.ndarray:
    try:
        return decode_image(upload.file, max_pixels)
    except ServiceError as exc:
        exc.message = f"{name}: {exc.message}"
        raise


def _render(format: ImageFormat, image: np.ndarray, result: Segmentation) -> bytes:
    if format is ImageFormat.overlay:
        return encoding.overlay_jpeg(image, result.mask)
    return encoding.mask_png(result.mask)
