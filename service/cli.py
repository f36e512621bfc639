"""``gwm serve`` and ``gwm worker``, registered on the main CLI by :func:`add_service_commands`."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def add_service_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``serve`` and ``worker`` on the ``gwm`` command line."""
    serve = subparsers.add_parser("serve", help="run the HTTP service (settings from GWM_* environment variables)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(handler=_serve)

    worker = subparsers.add_parser("worker", help="run an RQ worker for video jobs (needs GWM_REDIS_URL)")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.add_argument("--metrics-port", type=int, default=None, help="serve this worker's job metrics here")
    worker.add_argument(
        "--metrics-host", default="127.0.0.1", help="interface for --metrics-port (default 127.0.0.1; 0.0.0.0: all)"
    )
    worker.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    worker.set_defaults(handler=_worker)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.app import create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    import training.adapt  # noqa: F401  # import torch and the model code once, before the first job
    from service.queue.worker import run_worker
    from service.settings import Settings

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    if settings.torch_threads is not None:
        import torch

        torch.set_num_threads(settings.torch_threads)
    if args.metrics_port is not None:
        start_http_server(args.metrics_port, addr=args.metrics_host)
    logger.info("worker listening on %s queue %r", settings.redis_url, settings.queue_name)
    return run_worker(settings, burst=args.burst, log_level=args.log_level.upper())
