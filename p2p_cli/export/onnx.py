"""ONNX export (``torch.onnx.export``; the optional ``onnx`` extra: ``pip install 'p2p-cli[onnx]'``).

The batch dimension is dynamic; the image side is fixed at the run's ``image_size``. The string
metadata of :func:`~p2p_cli.export.wrapper.export_metadata` is stored in the model's
``metadata_props`` (``onnxruntime``: ``session.get_modelmeta().custom_metadata_map``).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import warnings
from pathlib import Path

import torch

from p2p_cli.errors import P2PError
from p2p_cli.export.wrapper import INPUT_NAME, OUTPUT_NAMES, ExportModule
from p2p_cli.io.atomic import atomic_write

OPSET = 18


def _require(module: str, extra: str = "onnx") -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise P2PError(f"ONNX export needs the {module} package: pip install 'p2p-cli[{extra}]' (or pip install "
                       f"onnx onnxscript onnxruntime)")


def _dynamo_available() -> bool:
    """torch ≥ 2.5 exports through ``torch.export`` (``dynamo=True``, needs onnxscript)."""
    return "dynamo" in inspect.signature(torch.onnx.export).parameters


def _export(module: ExportModule, sample: torch.Tensor, path: Path) -> None:
    names = {"input_names": [INPUT_NAME], "output_names": list(OUTPUT_NAMES)}
    if _dynamo_available():
        _require("onnxscript")
        batch = torch.export.Dim("batch", min=1, max=65536)
        torch.onnx.export(module, (sample,), str(path), **names, dynamic_shapes=({0: batch},), dynamo=True,
                          external_data=False, opset_version=OPSET, verbose=False)
    else:  # older torch: the TorchScript-based exporter
        axes = {n: {0: "batch"} for n in (INPUT_NAME, *OUTPUT_NAMES)}
        torch.onnx.export(module, (sample,), str(path), **names, dynamic_axes=axes, opset_version=OPSET)


def export_onnx(module: ExportModule, sample: torch.Tensor, path: str | Path, metadata: dict[str, str]) -> Path:
    """Write ``module`` traced on ``sample`` (B, 3, S, S) as ONNX to ``path`` (atomically), with
    ``metadata`` in ``metadata_props``. One-line P2PError when the onnx packages are missing."""
    _require("onnx")
    import onnx

    path = Path(path)

    def write(tmp: Path) -> None:
        # the exporter reports its passes on stdout and warns about its own internals: keep both off the CLI
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _export(module, sample, tmp)
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))

    with torch.no_grad():
        atomic_write(path, write)
    return path
