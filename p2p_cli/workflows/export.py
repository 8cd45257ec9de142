"""``p2p export``: write a run's model as ONNX or TorchScript and check it against PyTorch.

The export maps normalised images (B, 3, S, S) to logits (B, K) and per-prototype min distances
(B, m) (:mod:`p2p_cli.export`). After writing, the file is loaded back — ONNX with onnxruntime
(the optional ``onnx`` extra), TorchScript with ``torch.jit.load`` — and run on seeded sample
inputs next to the eager model; the largest absolute differences are reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from p2p_cli.errors import P2PError
from p2p_cli.export.check import CheckResult, check_onnx, check_torchscript, onnxruntime_available
from p2p_cli.export.onnx import export_onnx
from p2p_cli.export.torchscript import export_torchscript
from p2p_cli.export.wrapper import export_metadata, export_module, sample_inputs
from p2p_cli.io.hub import is_hub_ref, parse_hub_ref
from p2p_cli.models.runs import load_run
from p2p_cli.runtime.reporter import Reporter

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}


@dataclass(frozen=True)
class ExportRequest:
    model: str
    format: str
    workdir: Path = Path("runs")
    out: Path | None = None
    check: bool = True
    check_images: int = 4
    seed: int = 0


@dataclass
class ExportResult:
    path: Path
    format: str
    image_size: int
    num_classes: int
    num_prototypes: int
    check: CheckResult | None
    note: str | None = None


def default_out(ref: str, run_path: Path, fmt: str) -> Path:
    """``RUN/model.onnx`` (``RUN/model.torchscript.pt``) for a local run; ``./NAME.onnx`` for a Hub model
    (its snapshot in the Hugging Face cache is read-only territory)."""
    if is_hub_ref(ref):
        return Path.cwd() / (parse_hub_ref(ref).repo_id.split("/", 1)[1] + FORMATS[fmt])
    return run_path / ("model" + FORMATS[fmt])


def export_run(req: ExportRequest, reporter: Reporter) -> ExportResult:
    """Export ``req.model`` to ``req.format`` and (unless ``check`` is off) compare it with PyTorch."""
    if req.format not in FORMATS:
        raise P2PError(f"unknown export format '{req.format}' (onnx or torchscript)")
    if req.check_images < 1:
        raise P2PError(f"--check-images must be >= 1, got {req.check_images}")
    loaded = load_run(req.model, req.workdir)
    module = export_module(loaded.model)
    s = loaded.image_size
    out = req.out or default_out(req.model, loaded.run.path, req.format)
    meta = export_metadata(loaded.meta, s, name=loaded.name if not is_hub_ref(req.model) else req.model)
    sample = sample_inputs(s, n=2, seed=req.seed + 1)
    reporter.info(f"exporting {req.model} to {req.format} …")
    if req.format == "onnx":
        export_onnx(module, sample, out, meta)
    else:
        export_torchscript(module, sample, out, meta)
    check: CheckResult | None = None
    note = None
    if req.check:
        images = sample_inputs(s, n=req.check_images, seed=req.seed)
        if req.format == "torchscript":
            check = check_torchscript(out, module, images)
        elif onnxruntime_available():
            check = check_onnx(out, module, images)
        else:
            note = "check skipped: onnxruntime is not installed (pip install 'p2p-cli[onnx]')"
    return ExportResult(out, req.format, s, len(loaded.classes), loaded.model.num_prototypes, check, note)
