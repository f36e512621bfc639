"""The service commands of ``gwm``: segment, serve, worker.

:mod:`gwm_cli` builds a command's parser with its ``configure_*`` function only when that command
runs; what the commands need (uvicorn, onnxruntime, torch, RQ) is imported in their handlers.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import get_args

__all__ = ["configure_segment", "configure_serve", "configure_worker"]

logger = logging.getLogger(__name__)

_LOG_LEVELS = ["debug", "info", "warning", "error"]


def configure_serve(serve: argparse.ArgumentParser) -> None:
    """``gwm serve``: the HTTP service and web page."""
    serve.description = ("Run the HTTP API, the web page (/) and the API docs (/docs). Settings come from "
                         "GWM_* environment variables (see README: Configuration).")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    serve.add_argument("--log-level", default="info", choices=_LOG_LEVELS, help="default info")
    serve.set_defaults(handler=_serve)


def configure_worker(worker: argparse.ArgumentParser) -> None:
    """``gwm worker``: an RQ worker for video jobs."""
    worker.description = ("Run an RQ worker that takes video jobs from GWM_QUEUE_NAME on GWM_REDIS_URL "
                          "(the API must run with GWM_QUEUE_MODE=redis and share GWM_DATA_DIR).")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.add_argument("--metrics-port", type=int, default=None,
                        help="serve this worker's job metrics (Prometheus) on this port (default: none)")
    worker.add_argument("--metrics-host", default="127.0.0.1",
                        help="interface for --metrics-port (default 127.0.0.1; 0.0.0.0 for every interface)")
    worker.add_argument("--log-level", default="info", choices=_LOG_LEVELS, help="default info")
    worker.set_defaults(handler=_worker)


def configure_segment(segment: argparse.ArgumentParser) -> None:
    """``gwm segment``: images and videos on this machine, through the service's own code."""
    from models.merge_strategy import MergeStrategy
    from service.local import OutputFormat
    from service.settings import Device, Settings
    from training.flow import FLOW_METHODS

    settings = Settings()  # defaults as this environment's GWM_* variables make them
    segment.description = (
        "Segment the foreground of images and videos without a server, with the service's own code:\n"
        "an image takes the /segment pipeline (onnxruntime); a video, the job a worker runs for\n"
        "/adapt-and-segment (adapt a copy of the network to the video, then segment every frame).\n"
        "Results go beside each input: photo.jpg -> photo.mask.png (255 = foreground),\n"
        "clip.mp4 -> clip.masks.zip (a PNG per frame, named by source frame index); the paths\n"
        "written are printed, one a line. GWM_* variables set the defaults, as for gwm serve.")
    segment.epilog = ("examples:\n"
                      "  gwm segment photo.jpg\n"
                      "  gwm segment 'frames/**/*.jpg' -o masks/\n"
                      "  gwm segment clip.mp4 --steps 20 --format video\n"
                      "  gwm segment a.jpg b.png --format json > masks.json")
    segment.formatter_class = argparse.RawDescriptionHelpFormatter
    segment.add_argument("paths", nargs="+", metavar="PATH",
                         help="images (JPEG, PNG, WebP, BMP, TIFF, still GIF) and videos (mp4, webm, mov, mkv, "
                              "avi, animated GIF); quoted globs are expanded, ** recursively")
    segment.add_argument("-o", "--output", metavar="OUT",
                         help="with one input, the file to write (a folder if it ends in /); with several, a "
                              "folder (created); with --format json, the JSON file (default: beside each input; "
                              "JSON on stdout)")
    segment.add_argument("-f", "--format", default=OutputFormat.mask.value, choices=[f.value for f in OutputFormat],
                         help="mask (default): PNG for an image, ZIP of PNGs for a video; overlay: JPEG of the "
                              "image with its foreground tinted (images); video: H.264 MP4 of the masks (videos); "
                              "json: size, area, bounding box and COCO RLE per image, per-frame RLE with frame "
                              "indices, fps and timings per video, as the API returns them")
    segment.add_argument("--regions", action="store_true",
                         help="with --format json: each image's per-region soft scores")
    segment.add_argument("--refine", action=argparse.BooleanOptionalAction, default=None,
                         help="snap masks to image edges with a guided filter "
                              f"(default {'on' if settings.refine else 'off'}, GWM_REFINE)")
    segment.add_argument("--temporal", action=argparse.BooleanOptionalAction, default=None,
                         help="videos: fuse each frame's mask with its neighbours' along the optical flow "
                              f"(default {'on' if settings.temporal else 'off'}, GWM_TEMPORAL)")
    segment.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    segment.add_argument("--log-level", default="warning", choices=_LOG_LEVELS,
                         help="default warning: only problems (info adds the model loaded and the adaptation loss)")
    video = segment.add_argument_group("videos (the options of POST /adapt-and-segment)")
    video.add_argument("--steps", type=int, default=settings.default_adaptation_steps,
                       help="test-time adaptation steps; 0 segments with the weights as they are "
                            f"(default {settings.default_adaptation_steps}, GWM_DEFAULT_ADAPTATION_STEPS)")
    video.add_argument("--adaptation-interpolation", type=float,
                       help="fraction of the adaptation's change of the weights used: 0.5 the midpoint with the "
                            "original network, 1 the adapted one as the paper does "
                            f"(default {settings.adaptation_interpolation}, GWM_ADAPTATION_INTERPOLATION)")
    video.add_argument("--adaptation-runs", type=int,
                       help="independent runs of the steps whose weights are averaged; each costs the steps' time "
                            f"(default {settings.adaptation_runs}, GWM_ADAPTATION_RUNS)")
    video.add_argument("--adaptation-seed", type=int,
                       help="seed of the steps' draw of frames and flips: another seed is another draw "
                            f"(default {settings.adaptation_seed}, GWM_ADAPTATION_SEED)")
    video.add_argument("--appearance-check", dest="adaptation_appearance_check",
                       action=argparse.BooleanOptionalAction, default=None,
                       help="after adaptation, keep masks from growing into the background's colours (wakes, shadows) "
                            f"(default {'on' if settings.adaptation_appearance_check else 'off'}, "
                            "GWM_ADAPTATION_APPEARANCE_CHECK)")
    video.add_argument("--component-check", dest="adaptation_component_check",
                       action=argparse.BooleanOptionalAction, default=None,
                       help="after adaptation, drop mask components the original network's mask does not touch "
                            f"(default {'on' if settings.adaptation_component_check else 'off'}, "
                            "GWM_ADAPTATION_COMPONENT_CHECK)")
    video.add_argument("--motion-check", dest="adaptation_motion_check",
                       action=argparse.BooleanOptionalAction, default=None,
                       help="after adaptation, drop what the mask grew where it moves like the background "
                            f"(default {'on' if settings.adaptation_motion_check else 'off'}, "
                            "GWM_ADAPTATION_MOTION_CHECK)")
    video.add_argument("--steadiness-check", dest="adaptation_steadiness_check",
                       action=argparse.BooleanOptionalAction, default=None,
                       help="after adaptation, keep the original network's masks if the adapted ones flicker along the "
                            f"flow more than twice as much (default {'on' if settings.adaptation_steadiness_check else 'off'}, "
                            "GWM_ADAPTATION_STEADINESS_CHECK)")
    video.add_argument("--stride", type=int, default=1, help="use every stride-th frame (default 1)")
    video.add_argument("--max-frames", type=int, default=settings.max_video_frames,
                       help=f"stop after this many frames (default {settings.max_video_frames}, GWM_MAX_VIDEO_FRAMES)")
    model = segment.add_argument_group("model (default: the service's settings)")
    model.add_argument("--model", dest="model_path", type=Path,
                       help=f"ONNX model for images (default {settings.model_path}, GWM_MODEL_PATH)")
    model.add_argument("--checkpoint", dest="checkpoint_path", type=Path,
                       help=f"PyTorch checkpoint adapted to videos (default {settings.checkpoint_path}, "
                            "GWM_CHECKPOINT_PATH)")
    model.add_argument("--device", choices=get_args(Device),
                       help=f"auto: CUDA when available (default {settings.device}, GWM_DEVICE)")
    model.add_argument("--merge", choices=[strategy.value for strategy in MergeStrategy],
                       help=f"foreground merge of video frames (default {settings.merge or 'the one recorded in the model'}, "
                            "GWM_MERGE)")
    model.add_argument("--image-merge", choices=[strategy.value for strategy in MergeStrategy],
                       help=f"foreground merge of still images (default {settings.image_merge}, GWM_IMAGE_MERGE)")
    model.add_argument("--flow-method", choices=sorted(FLOW_METHODS),
                       help=f"optical flow for video adaptation (default {settings.flow_method}, GWM_FLOW_METHOD; "
                            "raft needs --raft-weights)")
    model.add_argument("--raft-weights", type=Path,
                       help=f"local RAFT weights file for --flow-method raft (default {settings.raft_weights or 'none'}, "
                            "GWM_RAFT_WEIGHTS)")
    segment.set_defaults(handler=_segment)


def _segment(args: argparse.Namespace) -> int:
    from service.local import OutputFormat, VideoOptions, expand, plan, segment_files
    from service.settings import Settings

    overrides = {name: getattr(args, name)
                 for name in ("model_path", "checkpoint_path", "device", "merge", "image_merge", "flow_method",
                              "raft_weights", "refine", "temporal", "adaptation_interpolation", "adaptation_runs",
                              "adaptation_seed", "adaptation_appearance_check", "adaptation_component_check",
                              "adaptation_motion_check", "adaptation_steadiness_check")}
    settings = Settings(**{name: value for name, value in overrides.items() if value is not None})
    format = OutputFormat(args.format)
    if args.steps < 0 or args.stride < 1 or args.max_frames < 1:
        raise ValueError("--steps must be >= 0, --stride and --max-frames >= 1")
    jobs = plan(expand(args.paths), format, args.output)
    outcome = segment_files(jobs, settings, format, VideoOptions(args.steps, args.stride, args.max_frames),
                            regions=args.regions, progress=not args.quiet)
    for path in outcome.written:
        print(path)  # one path a line, for scripts: gwm segment *.jpg | xargs ...
    if outcome.documents:
        text = json.dumps(outcome.documents[0] if len(jobs) == 1 else outcome.documents, indent=2) + "\n"
        if args.output is None:
            print(text, end="")
        else:
            output = Path(args.output)
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text)
            print(output)
    if outcome.failures:
        logger.error("%d of %d files failed", outcome.failures, len(jobs))
    return 1 if outcome.failures else 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.app import create_app

    uvicorn.run(create_app(), host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    import training.adapt  # noqa: F401  # import torch and the model code once, before the first job
    from service.queue.worker import run_worker
    from service.settings import Settings

    settings = Settings()
    if settings.torch_threads is not None:
        import torch

        torch.set_num_threads(settings.torch_threads)
    if args.metrics_port is not None:
        start_http_server(args.metrics_port, addr=args.metrics_host)
    logger.info("worker listening on %s queue %r", settings.redis_url, settings.queue_name)
    return run_worker(settings, burst=args.burst, log_level=args.log_level.upper())
