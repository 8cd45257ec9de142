"""Compare a written export with PyTorch on the same inputs: the largest absolute differences of
the logits (B, K) and of the min distances (B, m)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from p2p_cli.export.wrapper import INPUT_NAME, ExportModule

ATOL = 1e-4
RTOL = 1e-4


@dataclass(frozen=True)
class CheckResult:
    """How far the export's outputs are from PyTorch's on ``images`` inputs."""

    runtime: str
    images: int
    max_abs_logits: float
    max_abs_min_distances: float
    scale_logits: float
    scale_min_distances: float

    @property
    def ok(self) -> bool:
        """Both within ``ATOL + RTOL · max|reference|`` (float32 reorderings stay far below)."""
        return (self.max_abs_logits <= ATOL + RTOL * self.scale_logits
                and self.max_abs_min_distances <= ATOL + RTOL * self.scale_min_distances)


def reference_outputs(module: ExportModule, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        logits, dists = module(images)
    return logits.float(), dists.float()


def _compare(runtime: str, images: torch.Tensor, ref: tuple[torch.Tensor, torch.Tensor],
             got: tuple[torch.Tensor, torch.Tensor]) -> CheckResult:
    (rl, rd), (gl, gd) = ref, got
    return CheckResult(runtime, int(images.shape[0]), float((rl - gl).abs().max()), float((rd - gd).abs().max()),
                       float(rl.abs().max()), float(rd.abs().max()))


def onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def run_onnx(path: str | Path, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs of the ONNX file at ``path`` under onnxruntime's CPU provider."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    logits, dists = session.run(None, {INPUT_NAME: images.numpy()})
    return torch.from_numpy(logits), torch.from_numpy(dists)


def check_onnx(path: str | Path, module: ExportModule, images: torch.Tensor) -> CheckResult:
    """onnxruntime vs PyTorch on ``images`` (B, 3, S, S)."""
    return _compare("onnxruntime", images, reference_outputs(module, images), run_onnx(path, images))


def check_torchscript(path: str | Path, module: ExportModule, images: torch.Tensor) -> CheckResult:
    """``torch.jit.load`` of the file vs the eager module on ``images`` (B, 3, S, S)."""
    from p2p_cli.export.torchscript import load_torchscript

    loaded, _ = load_torchscript(path)
    with torch.no_grad():
        got = loaded(images)
    return _compare("torch.jit", images, reference_outputs(module, images), (got[0].float(), got[1].float()))
