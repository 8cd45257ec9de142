"""Shared test setup: offline hub, a per-session data cache, a tiny training config, the real CLI
in-process (:func:`run_cli`), and one tiny teacher trained once per session (:func:`shared_teacher`)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_CONFIG = """\
dataset: synthetic
synthetic_classes: 3
synthetic_train_per_class: 6
synthetic_test_per_class: 3
synthetic_image_size: 48
image_size: 32
cache_images: true
workers: 0
backbone: resnet18
feature_stride: 16
prototype_depth: 8
prototypes_per_class: 2
epochs: 3
warm_epochs: 1
warm_train_backbone: true
push_start: null
last_layer_epochs: 2
batch_size: 6
test_batch_size: 9
lr_backbone: 1.0e-3
lr_step_start: null
precision: fp32
deterministic: true
"""


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated synthetic data is cached once per test session, outside the user's cache."""
    path = tmp_path_factory.mktemp("p2p-cache")
    os.environ["P2P_CACHE_DIR"] = str(path)
    return path


@pytest.fixture()
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str] | None = None) -> tuple[int, str, str]:
    """Run ``p2p ARGS`` in-process through the real entry point; returns (exit code, stdout, stderr).
    Without ``capsys`` (module- and session-scoped fixtures) the output is not captured: ``("", "")``."""
    from p2p_cli.cli.app import main

    old = sys.argv
    sys.argv = ["p2p", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    if capsys is None:
        return code, "", ""
    out = capsys.readouterr()
    return code, out.out, out.err


def _digest(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def shared_teacher(tmp_path_factory: pytest.TempPathFactory, _cache_dir: Path) -> Iterator[Path]:
    """A tiny ProtoPNet teacher (:data:`TINY_CONFIG`: 3 classes, 6 prototypes × D=8, 32 px input,
    2×2 grid) trained once per session by the real ``p2p train-teacher``, for every module that
    needs a trained run. Read-only: :func:`copy_run` it into the module's own workdir before
    anything writes into it (the session fails at teardown if its files changed)."""
    root = tmp_path_factory.mktemp("shared")
    (root / "tiny.yaml").write_text(TINY_CONFIG)
    code, _, _ = run_cli(["train-teacher", "--config", str(root / "tiny.yaml"), "--workdir", str(root),
                          "--name", "teacher", "--device", "cpu", "-q"])
    assert code == 0, "training the shared tiny teacher failed"
    run = root / "teacher"
    before = _digest(run)
    yield run
    assert _digest(run) == before, "a test wrote into the shared teacher run: copy it with copy_run()"


def copy_run(run: Path, dst: Path) -> Path:
    """A copy of ``run`` at ``dst`` (a tests' own run to modify, rename or train from); returns ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(run, dst)
    return dst


def teacher_workdir(shared: Path, folder: Path, *names: str) -> Path:
    """``folder`` as a workdir holding ``tiny.yaml`` and one copy of the shared teacher per name in ``names``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.yaml").write_text(TINY_CONFIG)
    for name in names:
        copy_run(shared, folder / name)
    return folder
