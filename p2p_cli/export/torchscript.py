"""TorchScript export (``torch.jit.trace``): a self-contained archive that ``torch.jit.load`` runs
without p2p (Python or C++ libtorch). The metadata travels as the extra file ``p2p.json``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from p2p_cli.export.wrapper import ExportModule
from p2p_cli.io.atomic import atomic_write

EXTRA_FILE = "p2p.json"


def export_torchscript(module: ExportModule, sample: torch.Tensor, path: str | Path, metadata: dict[str, str]) -> Path:
    """Trace ``module`` on ``sample`` (B, 3, S, S) and save it to ``path`` (atomically)."""
    path = Path(path)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices and tracer remarks
        traced = torch.jit.trace(module, (sample,), check_trace=False)
    extra = {EXTRA_FILE: json.dumps(metadata)}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(traced, str(tmp), _extra_files=extra)

    atomic_write(path, write)
    return path


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """Load a TorchScript export and its metadata."""
    extra = {EXTRA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module, (json.loads(extra[EXTRA_FILE]) if extra[EXTRA_FILE] else {})
