"""Export a segmenter to ONNX for the server, with the metadata a server needs, and check parity.

The graph maps ``image`` (B, 3, H, W), normalised, to ``logits`` (B, K, H, W) and ``features``
(B, C, h, w) for merging; the batch dimension is dynamic. Metadata (ONNX ``metadata_props``):
``gwm.input_height``, ``gwm.input_width``, ``gwm.mean``, ``gwm.std`` (JSON lists),
``gwm.num_regions``, ``gwm.model_version``, ``gwm.architecture``, ``gwm.spec`` (the full JSON spec).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from models.segmenters import Segmenter

from .checkpoint import ModelSpec, load_model, merge_strategy

__all__ = ["export_onnx", "read_metadata", "onnx_parity", "OnnxNetwork", "load_network"]


class _WithFeatures(nn.Module):
    """ONNX export traces ``forward``; this exposes both outputs of ``forward_features``."""

    def __init__(self, model: Segmenter) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_features(image)


def export_onnx(model: Segmenter, spec: ModelSpec, path: str | Path, opset: int = 18) -> Path:
    """Write ``model`` to ``path`` as ONNX with dynamic batch and gwm metadata.

    Uses PyTorch's current exporter (``torch.export`` graph, ``dynamo=True``; the TorchScript one is
    deprecated). Opset 18 is the lowest it implements; onnxruntime >= 1.18 runs it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval().to("cpu", memory_format=torch.contiguous_format)
    height, width = spec["input_size"]
    example = torch.zeros(2, 3, height, width)  # not 1: torch.export would specialise a size-1 batch
    torch.onnx.export(
        _WithFeatures(model).eval(), (example,), str(path),
        input_names=["image"], output_names=["logits", "features"],
        dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}},
        opset_version=opset, dynamo=True, external_data=False, verbose=False,
    )
    graph = onnx.load(str(path))
    metadata = {
        "gwm.input_height": str(height),
        "gwm.input_width": str(width),
        "gwm.mean": json.dumps(spec["mean"]),
        "gwm.std": json.dumps(spec["std"]),
        "gwm.num_regions": str(model.num_regions),
        "gwm.model_version": str(spec["version"]),
        "gwm.architecture": spec["architecture"],
        "gwm.merge": merge_strategy(spec),
        "gwm.spec": json.dumps(spec),
    }
    del graph.metadata_props[:]
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    graph.doc_string = "gwm segmenter: image -> (region logits, appearance features)"
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``gwm.*`` metadata of an exported model."""
    graph = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in graph.metadata_props}


def onnx_parity(model: Segmenter, path: str | Path, batch_size: int = 2, seed: int = 0) -> float:
    """Largest absolute difference between PyTorch and onnxruntime (CPU) outputs on random input."""
    import onnxruntime

    meta = read_metadata(path)
    shape = (batch_size, 3, int(meta["gwm.input_height"]), int(meta["gwm.input_width"]))
    image = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = [t.numpy() for t in model.float().eval().to("cpu").forward_features(image)]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(["logits", "features"], {"image": image.numpy()})
    return max(float(np.abs(a - e).max()) for a, e in zip(actual, expected))


class OnnxNetwork:
    """An exported model run by onnxruntime behind the ``forward_features`` interface of a
    :class:`Segmenter`, so that ``gwm eval`` scores exactly the file the service serves.

    Inputs and outputs are CPU tensors; ``eval()`` exists for interface parity (ONNX graphs are
    always in inference mode).
    """

    def __init__(self, path: str | Path) -> None:
        import onnxruntime

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.path}")
        self.spec: ModelSpec = json.loads(read_metadata(self.path)["gwm.spec"])
        self.num_regions = int(self.spec["options"].get("num_regions", 4))
        self._session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])

    def eval(self) -> OnnxNetwork:
        return self

    def forward_features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features = self._session.run(["logits", "features"], {"image": image.cpu().numpy()})
        return torch.from_numpy(logits), torch.from_numpy(features)


def load_network(path: str | Path, device: str | torch.device = "cpu") -> tuple[Segmenter | OnnxNetwork, ModelSpec]:
    """A model to evaluate and its spec: an ``.onnx`` file through onnxruntime (CPU; the file the
    service serves), anything else as a PyTorch checkpoint on ``device``."""
    if Path(path).suffix == ".onnx":
        network = OnnxNetwork(path)
        return network, network.spec
    return load_model(path, device)
