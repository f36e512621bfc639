"""Root parser and dispatch of ``gwm``, with each command's parser built only when that command runs.

Training defaults come from modules that import torch (2–6 s on a busy CPU). The root parser knows
each command by name and one-line summary only; ``gwm COMMAND ...`` then imports the module that
configures that one command. ``gwm --help`` and ``gwm --version`` import nothing heavy.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

__all__ = ["COMMANDS", "Command", "command_parser", "main", "root_parser"]

log = logging.getLogger("gwm")


@dataclass(frozen=True)
class Command:
    """A sub-command: its name, its one-line summary and ``module:function`` that adds its options."""

    name: str
    summary: str
    configure: str

    def load(self) -> Callable[[argparse.ArgumentParser], None]:
        """Import the module that configures this command (the only import of its dependencies)."""
        module, function = self.configure.split(":")
        return getattr(importlib.import_module(module), function)


COMMANDS: tuple[Command, ...] = (
    Command("segment", "segment images and videos on this machine, without a server", "service.cli:configure_segment"),
    Command("serve", "run the HTTP service and web page (settings from GWM_* environment variables)",
            "service.cli:configure_serve"),
    Command("worker", "run an RQ worker for video jobs (needs GWM_REDIS_URL)", "service.cli:configure_worker"),
    Command("flow", "precompute optical flow for a dataset (resumable)", "training.cli:configure_flow"),
    Command("train", "train a segmenter on precomputed flow (resumes from last.pt)", "training.cli:configure_train"),
    Command("eval", "DAVIS J (merged/oracle) and image metrics of a checkpoint", "training.cli:configure_eval"),
    Command("export", "export a checkpoint to ONNX and check parity with PyTorch", "training.cli:configure_export"),
    Command("interpolate", "average a model and its fine-tuned descendant, weight by weight",
            "training.cli:configure_interpolate"),
    Command("pseudo-label", "masks of the training videos from a network adapted to each (self-training)",
            "training.cli:configure_pseudo_label"),
    Command("widen", "a trained U-Net in a wider network that computes the same", "training.cli:configure_widen"),
    Command("card", "write a model card (JSON) from a run, an eval report and an ONNX file",
            "training.cli:configure_card"),
)
_BY_NAME = {command.name: command for command in COMMANDS}

_DESCRIPTION = """\
Guess What Moves: learn to segment objects from optical flow, without labels.

Typical use:
  gwm segment photo.jpg          # photo.mask.png next to it
  gwm segment clip.mp4           # clip.masks.zip: adapt to the video, then a mask per frame
  gwm serve                      # HTTP API and web page on http://127.0.0.1:8000
Training your own model:
  gwm flow                       # precompute optical flow for DAVIS frames
  gwm train --steps 9000         # train a segmenter on that flow (resumable)
  gwm eval runs/default/last.pt  # DAVIS J (merged and oracle)
  gwm export runs/default/last.pt model.onnx

`gwm COMMAND --help` documents every option of a command, with its default."""


def _version() -> str:
    try:
        return version("gwm")
    except PackageNotFoundError:  # a source tree on PYTHONPATH, never pip-installed
        return "unknown (not installed)"


def root_parser() -> argparse.ArgumentParser:
    """``gwm [-v] [--version] COMMAND ...``; a command's own options are left for :func:`command_parser`."""
    parser = argparse.ArgumentParser(prog="gwm", description=_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print gwm's version and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (default: info)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        commands.add_parser(command.name, help=command.summary, add_help=False)
    return parser


def command_parser(name: str) -> argparse.ArgumentParser:
    """The full parser of ``gwm NAME``, importing what its options need."""
    command = _BY_NAME[name]
    parser = argparse.ArgumentParser(prog=f"gwm {name}", description=command.summary)
    command.load()(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gwm`` console script."""
    root, rest = root_parser().parse_known_args(argv)
    args = command_parser(root.command).parse_args(rest)
    level = "DEBUG" if root.verbose else getattr(args, "log_level", "info").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except (FileNotFoundError, ValueError) as error:
        log.error("%s", error)
        return 2
