"""`p2p export`: ONNX (checked with onnxruntime) and TorchScript exports of a trained run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from p2p_cli.data.loaders import load_dataset_index
from p2p_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from p2p_cli.errors import P2PError
from p2p_cli.explain.images import model_input, read_image
from p2p_cli.export.check import check_onnx
from p2p_cli.export.torchscript import load_torchscript
from p2p_cli.export.wrapper import export_module
from p2p_cli.models.runs import load_run
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.workflows.export import ExportRequest, export_run
from tests.conftest import copy_run, run_cli

onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def run(shared_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's tiny teacher (exports are written into the run directory)."""
    return copy_run(shared_teacher, tmp_path_factory.mktemp("export") / "teacher")


@pytest.fixture(scope="module")
def onnx_file(run: Path) -> Path:
    """The real CLI's ONNX export (default path RUN/model.onnx)."""
    code, _, err = run_cli(["export", str(run), "--format", "onnx", "-q"], None)
    assert code == 0, err
    return run / "model.onnx"


def real_images(run: Path, n: int = 4) -> torch.Tensor:
    """``n`` test images of the run's dataset, preprocessed as docs/deploy.md says: (n, 3, S, S)."""
    loaded = load_run(run)
    samples = load_dataset_index(loaded.config).test[:n]
    x = torch.stack([model_input(read_image(s.path), loaded.image_size) for s in samples]).float() / 255
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def test_onnx_matches_pytorch_on_4_images(run, onnx_file):
    import onnxruntime as ort

    loaded = load_run(run)
    images = real_images(run)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    logits, dists = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        ref = loaded.model(images)
    assert logits.shape == (4, 3) and dists.shape == (4, 6)
    assert np.abs(logits - ref.logits.numpy()).max() <= 1e-4
    assert np.abs(dists - ref.min_distances.numpy()).max() <= 1e-4
    one, _ = session.run(None, {"images": images[:1].numpy()})  # the batch dimension is dynamic
    assert np.abs(one - ref.logits[:1].numpy()).max() <= 1e-4
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == loaded.classes
    assert meta["image_size"] == "32" and json.loads(meta["mean"]) == list(IMAGENET_MEAN)
    result = check_onnx(onnx_file, export_module(loaded.model), images)
    assert result.ok and result.max_abs_logits <= 1e-4


def test_torchscript_matches_pytorch_on_4_images(run, capsys):
    code, out, err = run_cli(["export", str(run), "--format", "torchscript", "--out", str(run / "ts.pt")], capsys)
    assert code == 0, err
    assert "check (torch.jit, 4 images): max |Δ logits|" in out and out.rstrip().endswith("ok")
    module, meta = load_torchscript(run / "ts.pt")
    images = real_images(run)
    with torch.no_grad():
        logits, dists = module(images)
        ref = load_run(run).model(images)
    assert (logits - ref.logits).abs().max() <= 1e-4 and (dists - ref.min_distances).abs().max() <= 1e-4
    assert meta["producer"] == "p2p" and meta["arch"] == "protopnet"


def test_export_run_reports_the_check(run):
    """The workflow returns the comparison it ran (on 4 seeded sample images by default)."""
    result = export_run(ExportRequest(model=str(run), format="torchscript", out=run / "again.pt"),
                        Reporter(enabled=False))
    assert result.check is not None and result.check.ok and result.check.images == 4
    assert (result.num_classes, result.num_prototypes, result.image_size) == (3, 6, 32)
    assert not list(run.glob(".again.pt*"))  # written atomically: no temporary file left


def test_errors_are_one_line(run, monkeypatch):
    with pytest.raises(P2PError, match="unknown export format 'tflite'"):
        export_run(ExportRequest(model=str(run), format="tflite"), Reporter(enabled=False))
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(P2PError, match=r"ONNX export needs the onnx package: pip install 'p2p-cli\[onnx\]'"):
        export_run(ExportRequest(model=str(run), format="onnx", out=run / "x.onnx"), Reporter(enabled=False))
    assert not (run / "x.onnx").exists()


def test_missing_onnxruntime_skips_the_check_with_a_note(run, onnx_file, monkeypatch):
    import p2p_cli.workflows.export as wf

    monkeypatch.setattr(wf, "onnxruntime_available", lambda: False)
    monkeypatch.setattr(wf, "export_onnx", lambda module, sample, out, meta: shutil.copy(onnx_file, out))
    result = export_run(ExportRequest(model=str(run), format="onnx", out=run / "copy.onnx"), Reporter(enabled=False))
    assert result.check is None and "onnxruntime is not installed" in (result.note or "")


def test_the_deploy_guide_example_runs_and_agrees_with_p2p_predict(run, onnx_file, tmp_path):
    """docs/deploy.md's onnxruntime example, run as written (file names substituted), gives p2p predict's
    class and probability."""
    import contextlib
    import io
    import re

    from PIL import Image

    from p2p_cli.runtime.device import make_runtime
    from p2p_cli.workflows.predict import PredictRequest, predict

    guide = (Path(__file__).parent.parent / "docs" / "deploy.md").read_text()
    code = re.search(r"## onnxruntime \(Python\)\n\n```python\n(.*?)```", guide, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 20
    image = tmp_path / "photo.jpg"
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(image)
    code = code.replace('"model.onnx"', repr(str(onnx_file))).replace('"photo.jpg"', repr(str(image)))
    out, namespace = io.StringIO(), {}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "deploy.md", "exec"), namespace)
    first, second = out.getvalue().splitlines()
    (row,) = predict(PredictRequest(model=str(run), inputs=[image], top_k=5), make_runtime("cpu", "fp32", False),
                     Reporter(enabled=False)).predictions
    name, prob = first.rsplit(" ", 1)
    assert name == row.class_name and float(prob) == pytest.approx(row.probability, abs=1e-4)
    # the same closest prototypes: equal distances rank by rank (prototypes whose distances tie to
    # rounding may come in either order, so the test compares the distances, not the indices)
    listed = [int(j) for j in second.removeprefix("closest prototypes: [").rstrip("]").split(",")]
    guide_d = namespace["min_distances"][0][listed]
    assert guide_d.tolist() == pytest.approx([p["distance"] for p in row.prototypes], rel=1e-4, abs=1e-4)
