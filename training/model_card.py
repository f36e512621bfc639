"""Model cards: what a shipped model was trained on, how, for how long, and how well it does.

A card is a JSON file next to the weights. It is assembled from facts recorded elsewhere — the run's
``config.json`` and ``log.jsonl``, an evaluation report from ``gwm eval --output`` — plus the
inference cost measured here, so that every number on it can be reproduced with the project's CLI.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from models.segmenters import Segmenter
from models.spec import ModelSpec

from .pseudo_labels import RECORD_NAME as PSEUDO_LABEL_RECORD

__all__ = ["build_model_card", "inference_cost", "interpolation_record", "training_summary", "with_initial_training"]


def forward_gflops(model: Segmenter, size: tuple[int, int]) -> float:
    """GFLOPs of one forward pass of one image at ``size`` (PyTorch FLOP counter, on the CPU)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.float().eval().to("cpu").forward_with_features(torch.zeros(1, 3, *size))
    return counter.get_total_flops() / 1e9


def inference_cost(model: Segmenter, spec: ModelSpec, onnx_path: str | Path, repeats: int = 20) -> dict[str, Any]:
    """GFLOPs of one forward pass (PyTorch FLOP counter) and onnxruntime CPU latency at batch 1."""
    import onnxruntime

    image = torch.zeros(1, 3, *spec.input_size)
    gflops = forward_gflops(model, spec.input_size)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed = {"image": image.numpy()}
    for _ in range(3):
        session.run(None, feed)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        timings.append(time.perf_counter() - start)
    return {
        "gflops_per_image": gflops,
        "parameters": sum(p.numel() for p in model.parameters()),
        "onnxruntime_cpu_ms_per_image_p50": 1000 * float(np.median(timings)),
        "measured_on": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
    }


def training_summary(run_dir: str | Path) -> dict[str, Any]:
    """Steps, wall time and the final loss of a run, from its ``log.jsonl`` and ``config.json``."""
    run_dir = Path(run_dir)
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in records if "loss" in r]
    seconds, previous = 0.0, 0
    for record in steps:
        if record["step"] <= previous:  # a resumed run logs some steps again; count them once
            continue
        seconds += (record["step"] - previous) / record["steps_per_s"]
        previous = record["step"]
    curve = {r["step"]: {k: r[k] for k in r if k.startswith("J") or k == "step"} for r in records if "J_merged" in r}
    for report_path in sorted((run_dir / "eval").glob("*.json")):  # `gwm eval --output <run>/eval/...`
        report = json.loads(report_path.read_text())
        if report.get("step") is not None and "davis" in report:  # replaces the periodic eval of that step
            overall = report["davis"]["overall"]
            curve[report["step"]] = {"step": report["step"], "J_merged": overall["merged"]["J_mean"],
                                     "J_oracle": overall["oracle"]["J_mean"]}
    config = json.loads((run_dir / "config.json").read_text())
    # method, grid, gaps, settings: recorded in the run (since 2026-12-07), else read from its cache
    flow_meta = next((path for path in (run_dir / "flow.json", Path(config.get("flow_cache", "")) / "meta.json")
                      if path.is_file()), None)
    labels = run_dir / PSEUDO_LABEL_RECORD  # written by runs with --pseudo-labels
    return {
        "config": config,
        "flow": json.loads(flow_meta.read_text()) if flow_meta else None,
        **({"pseudo_labels": json.loads(labels.read_text())} if labels.is_file() else {}),
        "steps": previous,
        "training_hours": seconds / 3600,
        "final_loss": steps[-1]["loss"] if steps else None,
        "learning_curve": [curve[step] for step in sorted(curve)],
    }


def with_initial_training(training: dict[str, Any], earlier_card: dict[str, Any]) -> dict[str, Any]:
    """``training`` of a run started with ``--init-from``, plus the history of the weights it started from.

    A fine-tuned model's own run records only its last leg; the earlier card's training section (and
    its version) is kept under ``initialised_from`` so the card still states all data, steps and time,
    and ``total_training_hours`` sums every leg."""
    earlier = {"version": earlier_card["version"], **earlier_card["training"]}
    total = training["training_hours"] + earlier.get("total_training_hours", earlier["training_hours"])
    return {**training, "initialised_from": earlier, "total_training_hours": total}


def interpolation_record(training: dict[str, Any], alpha: float, run_dir: str | Path,
                         end: str = "last.pt", start_version: str | None = None) -> dict[str, Any]:
    """How shipped weights made by ``gwm interpolate`` relate to the run: ``(1 - alpha)`` × START +
    ``alpha`` × the run's ``end`` file (``last.pt``, or ``ema.pt``: the moving average of its weights,
    `gwm train --ema-decay`; see training.checkpoint).

    START is the weights the run started from, unless ``start_version`` names others: a run started
    from a fine-tuned model may still be interpolated with the shipped model that one came from, whose
    history ``initialised_from`` already holds a generation further down."""
    which = "the moving average of this run's weights" if end.startswith("ema") else f"this run's {end}"
    start = "the starting weights" if start_version is None else f"the weights of version {start_version}"
    return {"method": f"weight-space interpolation (WiSE-FT) of {start} and {which}",
            "start_version": start_version or training["initialised_from"]["version"], "alpha": alpha, "end": end,
            "command": f"gwm interpolate START.pt {Path(run_dir) / end} --alpha {alpha:g}"}


def build_model_card(
    name: str,
    spec: ModelSpec,
    cost: dict[str, Any],
    training: dict[str, Any],
    evaluation: dict[str, Any],
) -> dict[str, Any]:
    """The card as a JSON-ready dict."""
    davis = evaluation.get("davis", {})
    return {
        "name": name,
        "version": spec.version,
        "method": "Guess What Moves (Choudhury, Karazija et al., BMVC 2022): segmentation learned from optical "
                  "flow with a closed-form motion-model loss; no labels used in training",
        "architecture": {"name": spec.architecture, **spec.options, "input_size": list(spec.input_size),
                         "video_input_size": list(spec.video_size), "keep_aspect": spec.keep_aspect,
                         "merge": spec.merge.value},
        "training": training,
        "evaluation": {
            "davis_val_dev": {"protocol": davis.get("protocol"), **davis.get("overall", {})},
            "images": evaluation.get("images"),
        },
        "inference_cost": cost,
    }
