"""``POST /segment``: foreground masks for one or more uploaded images.

One file answers with one PNG mask, JPEG overlay or JSON object; several
files (repeat the ``file`` field) answer with a ZIP of PNGs or JPEGs, or a
JSON list, in upload order. Errors name the offending file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from PIL import Image

from models.refinement import refinement_guide
from service import encoding
from service.api.deps import SegmenterDep, StateDep
from service.errors import ServiceError, TooLarge
from service.imaging import decode_opened, open_image
from service.inference import OnnxSegmenter
from service.memory import TRIM_AFTER_PIXELS, release_free_memory

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
        413: {"description": "too large (bytes, pixels per image or per request, decompression bomb, too many images)"},
        415: {"description": "not a supported image"},
        429: {"description": "too many pixels being decoded now; see Retry-After"},
    },
)
async def segment(
    state: StateDep,
    segmenter: SegmenterDep,
    file: Annotated[list[UploadFile], File(description="Image(s): JPEG, PNG, WebP, BMP, TIFF, GIF (first frame).")],
    format: Annotated[ImageFormat, Query(description="png mask, json summary with RLE, or overlay JPEG")] = ImageFormat.png,
    regions: Annotated[bool, Query(description="json only: add per-region soft scores")] = False,
    refine: Annotated[
        bool | None, Query(description="snap the mask to the image's edges with a guided filter (default GWM_REFINE)")
    ] = None,
) -> Response:
    """Segment the foreground of each image at the image's own (EXIF-oriented) resolution.

    Pixels are counted from the headers first: a request over ``GWM_MAX_REQUEST_PIXELS`` is a 413
    before anything is decoded, and one that would take the server over ``GWM_MAX_PIXELS_IN_FLIGHT``
    waits its turn (at most ``GWM_PIXEL_WAIT_SECONDS``, then 429).
    """
    settings = state.settings
    if len(file) > settings.max_images_per_request:
        raise TooLarge(f"{len(file)} images in one request; the limit is {settings.max_images_per_request}")
    names = [upload.filename or f"image-{i}" for i, upload in enumerate(file)]
    with ExitStack() as opened:
        images = await run_in_threadpool(_open_all, opened, file, names, settings.max_image_pixels)
        pixels = sum(image.width * image.height for image in images)
        if pixels > settings.max_request_pixels:
            raise TooLarge(
                f"{len(images)} images with {pixels} pixels in all; the limit per request is "
                f"{settings.max_request_pixels}"
            )
        async with state.pixel_budget.hold(pixels):
            response = await run_in_threadpool(_segment_images, segmenter, images, names, format, regions,
                                               settings.refine if refine is None else refine)
    if pixels >= TRIM_AFTER_PIXELS:
        await run_in_threadpool(release_free_memory)
    return response


def _open_all(opened: ExitStack, uploads: list[UploadFile], names: list[str], max_pixels: int) -> list[Image.Image]:
    """Every image's header, each closed with ``opened``; errors name the file."""
    images = []
    for upload, name in zip(uploads, names, strict=True):
        with _named(name):
            images.append(opened.enter_context(open_image(upload.file, max_pixels)))
    return images


def _segment_images(
    segmenter: OnnxSegmenter,
    images: list[Image.Image],
    names: list[str],
    format: ImageFormat,
    regions: bool,
    refine: bool,
) -> Response:
    """Decode, segment and encode in one worker thread: CPU work stays off the event loop.

    Each image is decoded, shrunk to the network's input and dropped (the overlay keeps its uint8
    RGB to draw on, refinement a guide of at most ~2 MP); then one network run, and each full-size
    mask is encoded and dropped before the next is made.
    """
    prepared, sizes, kept, guides = [], [], [], []
    for image, name in zip(images, names, strict=True):
        with _named(name):
            rgb = decode_opened(image)
        prepared.append(segmenter.prepare(rgb))
        sizes.append(rgb.shape[:2])
        kept.append(rgb if format is ImageFormat.overlay else None)
        guides.append(refinement_guide(rgb) if refine else None)
        del rgb
        image.close()
    results = segmenter.segment_prepared(prepared, sizes, with_regions=regions and format is ImageFormat.json,
                                         guides=guides)
    if format is ImageFormat.json:
        items = [{"filename": name, **encoding.mask_summary(r.mask, r.regions)} for name, r in zip(names, results)]
        return JSONResponse(items[0] if len(items) == 1 else items)
    payloads = []
    for index, result in enumerate(results):
        rgb, kept[index] = kept[index], None
        payloads.append(encoding.overlay_jpeg(rgb, result.mask) if rgb is not None else encoding.mask_png(result.mask))
    media_type, extension = _MEDIA[format]
    if len(payloads) == 1:
        return Response(payloads[0], media_type=media_type)
    stems = [encoding.safe_stem(name) for name in names]
    entries = [(f"{i:03d}-{stem}.{extension}", data) for i, (stem, data) in enumerate(zip(stems, payloads))]
    return Response(
        encoding.zip_files(entries),
        media_type="application/zip",
        headers={"Content-Disposition": 'attachment; filename="masks.zip"'},
    )


@contextmanager
def _named(name: str) -> Iterator[None]:
    """Prefix a service error's message with the file it is about."""
    try:
        yield
    except ServiceError as exc:
        exc.message = f"{name}: {exc.message}"
        raise
