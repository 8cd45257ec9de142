"""The bad-input suite: hostile flags, files and checkpoints, each through the real CLI in-process.

Every case must end with a non-zero exit, exactly one line on stderr (``Error: …`` naming the
problem), no traceback, and the workdir byte-identical (the finished run in it untouched). All
cases fail before any training, so the whole suite takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.conftest import run_cli, teacher_workdir


@pytest.fixture(scope="module")
def base(shared_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir holding ``tiny.yaml`` and one finished run ``t`` (a copy of the shared teacher)."""
    return teacher_workdir(shared_teacher, tmp_path_factory.mktemp("bad") / "w", "t")


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def hostile_copy(workdir: Path, name: str, edit: Callable[[dict, dict], tuple[dict, dict]]) -> Path:
    """A copy of run ``t`` named ``name`` whose model file is rewritten by ``edit(tensors, metadata)``."""
    run = workdir / name
    if not run.exists():
        shutil.copytree(workdir / "t", run)
        path = run / "model.safetensors"
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata())
        tensors, meta = edit(load_file(str(path)), meta)
        save_file(tensors, str(path), metadata=meta)
    return run


def _model_config(meta: dict, **changes: object) -> dict:
    return {**meta, "model_config": json.dumps({**json.loads(meta["model_config"]), **changes})}


HOSTILE: dict[str, tuple[Callable[[dict, dict], tuple[dict, dict]], str]] = {
    "wrong-shape": (lambda t, m: ({**t, "prototype_vectors": torch.zeros(5, 8, 1, 1)}, m),
                    "tensor 'prototype_vectors' has shape (5, 8, 1, 1), the architecture expects (6, 8, 1, 1)"),
    "wrong-dtype": (lambda t, m: ({**t, "last_layer.weight": t["last_layer.weight"].double()}, m),
                    "tensor 'last_layer.weight' has dtype float64, the architecture expects float32"),
    "billion-classes": (lambda t, m: (t, _model_config(m, num_classes=1e9)), "num_classes must be an integer"),
    "billion-classes-int": (lambda t, m: (t, _model_config(m, num_classes=10**9)), "num_classes must be an integer"),
    "negative-depth": (lambda t, m: (t, _model_config(m, prototype_depth=-3)), "'prototype_depth' must be ≥ 1"),
    "unknown-config-key": (lambda t, m: (t, _model_config(m, evil=1)), "unknown model_config key 'evil'"),
    "extra-tensor": (lambda t, m: ({**t, "evil": torch.zeros(3)}, m), "unexpected tensor 'evil'"),
    "missing-tensor": (lambda t, m: ({k: v for k, v in t.items() if k != "add_on.0.weight"}, m),
                       "tensor 'add_on.0.weight' is missing"),
    "class-identity": (lambda t, m: ({**t, "class_identity": torch.zeros(6, 4)}, m), "tensor 'class_identity'"),
}


def _setup(case: str, workdir: Path, tmp: Path) -> tuple[list[str], str]:
    """The arguments of ``case`` (files it needs are made in ``tmp`` or, for hostile runs, in the
    workdir before its digest is taken) and the text its error line must contain."""
    cfg = str(workdir / "tiny.yaml")
    train = ["train-teacher", "--config", cfg, "--workdir", str(workdir), "--device", "cpu", "-q"]
    if case in HOSTILE:
        edit, expect = HOSTILE[case]
        run = hostile_copy(workdir, f"h-{case}", edit)
        return ["evaluate", "--workdir", str(workdir), "-m", str(run), "--device", "cpu", "-q"], expect
    flags = {
        "nan-weight": (["--lambda-clst", "nan"], "'lambda_clst' must be a finite number"),
        "inf-lr": (["--lr-backbone", "inf"], "'lr_backbone' must be a finite number"),
        "overflow-lr": (["--lr-add-on", "1e400"], "'lr_add_on' must be a finite number"),
        "negative-depth": (["--prototype-depth", "-5"], "'prototype_depth' must be ≥ 1"),
        "zero-depth": (["--prototype-depth", "0"], "'prototype_depth' must be ≥ 1"),
        "zero-batch": (["--batch-size", "0"], "'batch_size' must be ≥ 1"),
        "huge-image": (["--image-size", "100000"], "'image_size' must be ≤ 4096"),
        "huge-seed": (["--seed", "99999999999999999999"], "'seed' must be ≤"),
        "negative-seed": (["--seed", "-1"], "'seed' must be ≥ 0"),
        "huge-synthetic": (["--synthetic-image-size", "100000"], "'synthetic_image_size' must be ≤ 1024"),
        "one-class": (["--synthetic-classes", "1"], "'synthetic_classes' must be ≥ 2"),
        "unknown-backbone": (["--backbone", "resnet19", "--name", "nb"], "p2p models --timm"),
        "empty-name": (["--name", ""], "must not be empty"),
        "control-name": (["--name", "a\tb"], "control characters"),
        "escape-name": (["--name", "a\x1b[2Jb"], "control characters"),
        "hidden-name": (["--name", ".t"], "may not start with '.'"),
        "slash-name": (["--name", "a/b"], "no '/'"),
        "long-name": (["--name", "x" * 300], "run name too long"),
        "existing-run": (["--name", "t"], "already exists; pass --overwrite"),
        "resume-finished": (["--name", "t", "--resume"], "already finished"),
    }
    on_run = {
        "eval-noise-seed": (["evaluate", "--noise-seed", "-1"], "--noise-seed must be in [0, 4294967295]"),
        "attack-seed": (["robustness", "--seed", "-4"], "--seed must be in [0, 4294967295]"),
        "prune-target": (["prune", "--target", "-3"], "--target -3 must be between 1 and 5"),
    }
    if case in on_run:
        (command, *extra), expect = on_run[case]
        return [command, "--workdir", str(workdir), "-m", "t", "--device", "cpu", "-q", *extra], expect
    if case == "list-value":
        path = tmp / "list.yaml"
        path.write_text((workdir / "tiny.yaml").read_text() + "backbone: [a, b]\n")
        return [*train[:2], str(path), *train[3:], "--name", "x"], "config key 'backbone' expects a str"
    if case in flags:
        extra, expect = flags[case]
        return [*train, *extra], str(expect)
    if case == "config-not-utf8":
        path = tmp / "latin1.yaml"
        path.write_bytes(b"epochs: 3\nbackbone: r\xe9snet18\n")
        return [*train[:2], str(path), *train[3:]], "not UTF-8 text"
    if case == "config-not-yaml":
        path = tmp / "bad.yaml"
        path.write_text("epochs: [3\n")
        return [*train[:2], str(path), *train[3:]], "not valid YAML"
    if case == "workdir-is-a-file":
        (tmp / "afile").write_text("x")
        return [*train[:4], str(tmp / "afile"), *train[5:], "--name", "x"], "is a file, not a folder"
    if case == "synthesize-huge":
        return ["data", "synthesize", "--out", str(tmp / "s"), "--image-size", "100000"], "image_size=100000"
    if case == "synthesize-small":
        return ["data", "synthesize", "--out", str(tmp / "s"), "--image-size", "40"], "image_size=40"
    if case == "synthesize-onto-file":
        (tmp / "afile").write_text("x")
        return ["data", "synthesize", "--out", str(tmp / "afile"), "--classes", "2", "--train-per-class", "1",
                "--test-per-class", "1", "--image-size", "48"], "not a directory"
    raise AssertionError(case)


CASES = [*HOSTILE, "nan-weight", "inf-lr", "overflow-lr", "negative-depth", "zero-depth", "zero-batch",
         "huge-image", "huge-seed", "negative-seed", "huge-synthetic", "one-class", "list-value",
         "unknown-backbone", "empty-name", "control-name", "escape-name", "hidden-name", "slash-name", "long-name",
         "existing-run", "resume-finished", "config-not-utf8", "config-not-yaml", "workdir-is-a-file",
         "synthesize-huge", "synthesize-small", "synthesize-onto-file", "eval-noise-seed", "attack-seed",
         "prune-target"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_changes_nothing(case, base, tmp_path, capsys):
    args, expect = _setup(case, base, tmp_path)
    before = digest(base)
    code, _, err = run_cli(args, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert expect in lines[0], err
    assert digest(base) == before, "the workdir changed"
