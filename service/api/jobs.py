"""Video jobs: ``POST /adapt-and-segment`` and ``/jobs/{id}`` (status, result, cancel)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response

from service import encoding, rle
from service.api.deps import StateDep
from service.errors import Conflict, InvalidParameter, TooManyRequests
from service.jobs import VideoJobRequest
from service.queue.base import JobQueue, check_job_id, check_room, new_job_id
from service.results import ResultCache
from service.schemas import JobState, JobStatus
from service.uploads import receive_upload, upload_request_body
from service.video import VideoLimits, probe_video

router = APIRouter(tags=["videos"])

JobId = Annotated[str, PathParam(description="Job id as returned by POST /adapt-and-segment")]


class ResultFormat(StrEnum):
    """Formats of a job's result."""

    zip = "zip"
    json = "json"
    video = "video"


@router.post("/adapt-and-segment", status_code=202, response_model=JobStatus, summary="Adapt And Segment",
             openapi_extra=upload_request_body("file", "Video: mp4, webm, mov, mkv, avi or GIF."))
async def submit_video_job(
    state: StateDep,
    request: Request,
    steps: Annotated[int | None, Query(ge=0, description="Adaptation steps (default GWM_DEFAULT_ADAPTATION_STEPS)")] = None,
    stride: Annotated[int, Query(ge=1, le=100, description="Use every stride-th frame")] = 1,
    max_frames: Annotated[int | None, Query(ge=1, description="Stop after this many frames")] = None,
    format: Annotated[ResultFormat, Query(description="Default format of the result")] = ResultFormat.zip,
    refine: Annotated[
        bool | None, Query(description="snap each mask to its frame's edges with a guided filter (default GWM_REFINE)")
    ] = None,
    temporal: Annotated[
        bool | None, Query(description="fuse each frame's mask with its neighbours' along the optical flow, for "
                                       "steadier masks (default GWM_TEMPORAL)")
    ] = None,
) -> JSONResponse:
    """Queue test-time adaptation on the uploaded video; poll the returned URL for progress.

    The video arrives as the multipart form field ``file``, read by service.uploads as it streams
    in (declared to the docs by ``openapi_extra``), not by FastAPI's form parsing."""
    settings = state.settings
    steps = settings.default_adaptation_steps if steps is None else steps
    if steps > settings.max_adaptation_steps:
        raise InvalidParameter(f"steps={steps} exceeds the limit of {settings.max_adaptation_steps}")
    if max_frames is not None and max_frames > settings.max_video_frames:
        raise InvalidParameter(f"max_frames={max_frames} exceeds the limit of {settings.max_video_frames}")
    limits = VideoLimits(settings.max_video_frames, settings.max_video_seconds, settings.max_video_side)
    check_room(await run_in_threadpool(state.queue.depth), settings)  # a full queue answers before the upload

    job_id = new_job_id()
    path = await receive_upload(
        request,
        "file",
        settings.upload_dir,
        job_id,
        settings.max_upload_bytes,
        settings.max_upload_dir_bytes,
        settings.retry_after_seconds,
    )
    try:
        await run_in_threadpool(probe_video, path, limits)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    job = VideoJobRequest(
        video_path=str(path),
        steps=steps,
        stride=stride,
        max_frames=max_frames or settings.max_video_frames,
        limits=limits,
        result_format=format.value,
        refine=settings.refine if refine is None else refine,
        temporal=settings.temporal if temporal is None else temporal,
    )
    try:  # the queue checks its room again, atomically: others may have filled it during the upload
        status = await run_in_threadpool(state.queue.submit, job_id, job)
    except TooManyRequests:
        path.unlink(missing_ok=True)
        raise
    # Should the queue fail otherwise, the maintenance sweep removes the orphaned upload.
    return JSONResponse(status.model_dump(mode="json"), status_code=202, headers={"Location": status.url})


@router.get("/jobs/{job_id}", response_model=JobStatus)
def job_status(state: StateDep, job_id: JobId) -> JobStatus:
    """State, stage, progress, timings and error of a job."""
    return state.queue.status(check_job_id(job_id))


@router.delete("/jobs/{job_id}", response_model=JobStatus)
def cancel_job(state: StateDep, job_id: JobId) -> JobStatus:
    """Cancel a queued job, or ask a running one to stop at its next step."""
    return state.queue.cancel(check_job_id(job_id))


@router.get(
    "/jobs/{job_id}/result",
    responses={200: {"content": {"application/zip": {}, "application/json": {}, "video/mp4": {}}}},
)
def job_result(
    state: StateDep,
    job_id: JobId,
    format: Annotated[ResultFormat | None, Query(description="zip of PNGs, json RLE, or mp4 mask video")] = None,
) -> Response:
    """Masks of a succeeded job: ZIP of PNGs named by source frame index, JSON RLE, or MP4.

    A plain function, so FastAPI runs it in its thread pool: the queue's calls (Redis) and the
    packaging must not hold up the event loop."""
    status = state.queue.status(check_job_id(job_id))
    chosen = format or ResultFormat(status.options.get("format", ResultFormat.zip.value))
    if status.state is not JobState.SUCCEEDED:
        raise Conflict(f"job {job_id} has no result; it is {status.state}")
    if chosen is ResultFormat.json:
        return JSONResponse({"id": job_id, **state.queue.result(job_id)})
    return _package(state.queue, state.results, job_id, chosen)


_PACKAGES = {ResultFormat.video: ("mp4", "video/mp4"), ResultFormat.zip: ("zip", "application/zip")}


def _package(queue: JobQueue, results: ResultCache, job_id: str, format: ResultFormat) -> FileResponse:
    """The ZIP or MP4 of a succeeded job's masks, packaged on the first request and served from disk after."""
    extension, media_type = _PACKAGES[format]
    path = results.get(job_id, extension, lambda: _build_package(queue.result(job_id), format))
    return FileResponse(path, media_type=media_type, filename=f"{job_id}.{extension}")


def _build_package(result: dict[str, Any], format: ResultFormat) -> bytes:
    masks = (rle.decode(item) for item in result["masks"])  # one full-size mask at a time
    if format is ResultFormat.video:
        return encoding.mask_video_mp4(masks, result["fps"])
    return encoding.masks_zip(result["frame_indices"], masks)
