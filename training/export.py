"""Export a segmenter to ONNX for the server, with the metadata a server needs, and check parity.

The graph maps ``image`` (B, 3, H, W), normalised, to ``logits`` (B, K, H, W) and ``features``
(B, C, h, w) for merging; the batch dimension is dynamic, and so are height and width (multiples of
16) for a spec that keeps each image's aspect ratio (``keep_aspect``). Metadata (ONNX
``metadata_props``) is the model's spec, see :meth:`models.spec.ModelSpec.to_onnx_metadata`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from models.preprocessing import SIZE_MULTIPLE
from models.segmenters import Segmenter, SegmenterOutput
from models.spec import ModelSpec

from .checkpoint import load_model

__all__ = ["OnnxNetwork", "export_onnx", "load_network", "onnx_parity", "read_metadata"]


class _WithFeatures(nn.Module):
    """ONNX export traces ``forward``; this exposes both outputs of ``forward_with_features``, as the
    plain tuple the graph's two outputs are."""

    def __init__(self, model: Segmenter) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(self.model.forward_with_features(image))


def export_onnx(model: Segmenter, spec: ModelSpec, path: str | Path, opset: int = 18) -> Path:
    """Write ``model`` to ``path`` as ONNX with dynamic batch (and size, with ``spec.keep_aspect``) and
    gwm metadata.

    Uses PyTorch's current exporter (``torch.export`` graph, ``dynamo=True``; the TorchScript one is
    deprecated). Opset 18 is the lowest it implements; onnxruntime >= 1.18 runs it.
    """
    if spec.num_regions != model.num_regions:
        raise ValueError(f"the spec says K = {spec.num_regions} but the model predicts {model.num_regions} regions")
    if spec.keep_aspect and not model.any_input_size:
        raise ValueError(f"a {spec.architecture} network takes one input size only: it cannot keep each image's "
                         "aspect ratio (export it with keep_aspect off)")
    height, width = spec.input_size
    if spec.keep_aspect and (height % SIZE_MULTIPLE or width % SIZE_MULTIPLE):
        raise ValueError(f"the input size {height}x{width} must be a multiple of {SIZE_MULTIPLE} on both sides: the "
                         "exported graph takes such sizes only, and video frames are fed at exactly this size")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval().to("cpu", memory_format=torch.contiguous_format)
    example = torch.zeros(2, 3, height, width)  # not 1: torch.export would specialise a size-1 batch
    dynamic = {0: torch.export.Dim("batch", min=1)}
    if spec.keep_aspect:  # height and width: any multiples of SIZE_MULTIPLE up to 4096
        dynamic.update({axis: SIZE_MULTIPLE * torch.export.Dim(name, min=1, max=4096 // SIZE_MULTIPLE)
                        for axis, name in ((2, "height"), (3, "width"))})
    torch.onnx.export(
        _WithFeatures(model).eval(), (example,), str(path),
        input_names=["image"], output_names=["logits", "features"],
        dynamic_shapes={"image": dynamic},
        opset_version=opset, dynamo=True, external_data=False, verbose=False,
    )
    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    for key, value in spec.to_onnx_metadata().items():
        graph.metadata_props.add(key=key, value=value)
    graph.doc_string = "gwm segmenter: image -> (region logits, appearance features)"
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``gwm.*`` metadata of an exported model."""
    graph = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in graph.metadata_props}


def onnx_parity(model: Segmenter, path: str | Path, batch_size: int = 2, seed: int = 0,
                size: tuple[int, int] | None = None) -> float:
    """Largest difference between PyTorch and onnxruntime (CPU) outputs on random input of ``size``
    (default: the spec's input size), relative to each output's largest magnitude (at least 1).

    Relative, because float32 kernels that sum in another order differ in proportion to the values:
    a trained U-Net's logits reach ~20, where 2e-4 apart is a 1e-5 disagreement (and 7e-5 in the
    region probabilities), while a fresh network's outputs are about 1 and the figure is absolute.
    """
    import onnxruntime

    shape = (batch_size, 3, *(size or ModelSpec.from_onnx_metadata(read_metadata(path)).input_size))
    image = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = [t.numpy() for t in model.float().eval().to("cpu").forward_with_features(image)]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(["logits", "features"], {"image": image.numpy()})
    return max(float(np.abs(a - e).max() / max(1.0, np.abs(e).max())) for a, e in zip(actual, expected))


class OnnxNetwork:
    """An exported model run by onnxruntime behind the ``forward_with_features`` interface of a
    :class:`Segmenter`, so that ``gwm eval`` scores exactly the file the service serves.

    Inputs and outputs are CPU tensors; ``eval()`` exists for interface parity (ONNX graphs are
    always in inference mode).
    """

    def __init__(self, path: str | Path) -> None:
        import onnxruntime

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.path}")
        self.spec = ModelSpec.from_onnx_metadata(read_metadata(self.path))
        self.num_regions = self.spec.num_regions
        self._session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])

    def eval(self) -> OnnxNetwork:
        return self

    def forward_with_features(self, image: torch.Tensor) -> SegmenterOutput:
        logits, features = self._session.run(["logits", "features"], {"image": image.cpu().numpy()})
        return SegmenterOutput(torch.from_numpy(logits), torch.from_numpy(features))


def load_network(path: str | Path, device: str | torch.device = "cpu") -> tuple[Segmenter | OnnxNetwork, ModelSpec]:
    """A model to evaluate and its spec: an ``.onnx`` file through onnxruntime (CPU; the file the
    service serves), anything else as a PyTorch checkpoint on ``device``."""
    if Path(path).suffix == ".onnx":
        network = OnnxNetwork(path)
        return network, network.spec
    return load_model(path, device)
