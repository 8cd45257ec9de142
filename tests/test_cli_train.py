"""End-to-end: the real `p2p train-teacher` on a tiny synthetic dataset (small and few)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from p2p_cli.io.checkpoint import load_tensors
from tests.conftest import run_cli


def test_train_teacher_writes_a_complete_run(tmp_path, tiny_config, capsys, monkeypatch):
    from p2p_cli.training import trainer

    passes: list[str] = []
    real_pass = trainer.min_distance_pass
    monkeypatch.setattr(trainer, "min_distance_pass", lambda *a: passes.append(a[-1]) or real_pass(*a))
    code, out, err = run_cli(["train-teacher", "--config", str(tiny_config), "--workdir", str(tmp_path),
                              "--name", "t", "--device", "cpu"], capsys)
    assert code == 0, err
    run = tmp_path / "t"
    for name in ("config.yaml", "model.safetensors", "prototypes.json", "metrics.jsonl"):
        assert (run / name).is_file(), name
    assert not (run / "checkpoints" / "last.safetensors").exists()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    stages = [r["stage"] for r in records]
    assert stages[:3] == ["warm", "joint", "joint"] and "push" in stages and stages[-1] == "last_layer"
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in records)
    # one test pass per epoch (eval_every 1) and one after the push, which the last layer reuses
    assert passes.count("test") == 3 + 1 and passes.count("cache similarities") == 1
    protos = json.loads((run / "prototypes.json").read_text())
    assert len(protos["prototypes"]) == 6 and protos["grid"] == [2, 2]
    assert all(p["distance_after"] < 1e-6 for p in protos["prototypes"])
    assert "test accuracy" in out
    # the same name again is refused
    code, _, err = run_cli(["train-teacher", "--config", str(tiny_config), "--workdir", str(tmp_path),
                            "--name", "t"], capsys)
    assert code == 2 and "already exists; pass --overwrite" in err and "Traceback" not in err


def _subprocess(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "p2p_cli", *args], capture_output=True, text=True, timeout=300)


def snapshot_step(run: Path) -> int:
    """Steps done according to the run's snapshot header (``snapshot.step``), -1 while there is none."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(run / "checkpoints" / "last.safetensors"), framework="pt") as fh:
            return int(json.loads(fh.metadata()["snapshot"])["step"])
    except (OSError, SafetensorError):
        return -1


def run_killed_after_snapshot(args: list[str], run: Path, step: int, timeout: float = 300) -> int:
    """Start ``p2p ARGS`` and SIGKILL it as soon as its snapshot records ≥ ``step`` finished steps
    (polled every 2 ms); returns the exit code. The test asserts the process did not end on its own."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "p2p_cli", *args], stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                if snapshot_step(run) >= step:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.002)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        assert proc.returncode == -signal.SIGKILL, f"not killed (exit {proc.returncode}): {err.read().decode()}"
    return proc.returncode


def assert_killed_at_snapshot(args: list[str], run: Path, step: int, total: int) -> None:
    """Run ``p2p ARGS`` into ``run``, SIGKILLed once the snapshot of step ``step`` (of ``total``)
    exists: the run must be left unfinished, with a snapshot to resume from."""
    assert run_killed_after_snapshot(args, run, step) == -signal.SIGKILL
    assert not (run / "model.safetensors").exists()  # it did not finish: the resume has work to do
    assert step <= snapshot_step(run) < total


def assert_kill_and_resume_equals_uninterrupted(common: list[str], workdir: Path, full: str, cut: str) -> None:
    """Run ``common`` to the end as ``full``; run it as ``cut`` and SIGKILL it once the snapshot of
    its first step exists (steps: 0 warm, 1 joint, 2 joint, 3 push, 4 last layer), then ``--resume``
    it: the two final models must be bit-identical."""
    done = _subprocess([*common, "--name", full])
    assert done.returncode == 0, done.stderr
    assert_killed_at_snapshot([*common, "--name", cut], workdir / cut, step=1, total=5)
    resumed = _subprocess([*common, "--name", cut, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    a, _ = load_tensors(workdir / full / "model.safetensors")
    b, _ = load_tensors(workdir / cut / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_sigkill_mid_joint_then_resume_equals_uninterrupted(tmp_path, tiny_config):
    common = ["train-teacher", "--config", str(tiny_config), "--workdir", str(tmp_path), "--device", "cpu", "-q"]
    assert_kill_and_resume_equals_uninterrupted(common, tmp_path, "full", "cut")
    assert (tmp_path / "full" / "metrics.jsonl").read_text().count("\n") == \
        (tmp_path / "cut" / "metrics.jsonl").read_text().count("\n")


def _corrupt_folder(root: Path) -> Path:
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("a", "b"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (16, 16), (i * 50, 0, 0)).save(d / f"{i}.png")
    (root / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8not really a jpeg")
    return root


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", ["missing-root", "wrong-layout", "corrupt-image", "unknown-backbone",
                                  "mistyped-key", "negative-epochs", "pickle-weights", "truncated-snapshot"])
def test_bad_input_is_one_clear_line(case, tmp_path, tiny_config, capsys):
    args = ["train-teacher", "--config", str(tiny_config), "--workdir", str(tmp_path / "w"), "--name", "t"]
    expect = {
        "missing-root": "not found",
        "wrong-layout": "images.txt",
        "corrupt-image": "broken.jpg",
        "unknown-backbone": "unknown backbone 'resnet19'",
        "mistyped-key": "unknown key 'epoch' (did you mean 'epochs'?)",
        "negative-epochs": "'epochs' must be ≥ 1",
        "pickle-weights": "cannot be loaded safely",
        "truncated-snapshot": "truncated or corrupt",
    }[case]
    if case == "missing-root":
        args += ["--dataset", "cub", "--data-root", str(tmp_path / "nowhere")]
    elif case == "wrong-layout":
        (tmp_path / "empty").mkdir()
        args += ["--dataset", "cub", "--data-root", str(tmp_path / "empty")]
    elif case == "corrupt-image":
        args += ["--dataset", "folder", "--data-root", str(_corrupt_folder(tmp_path / "folder"))]
    elif case == "unknown-backbone":
        args += ["--backbone", "resnet19"]
    elif case == "mistyped-key":
        args[2] = str(_write(tmp_path / "bad.yaml", tiny_config.read_text() + "epoch: 3\n"))
    elif case == "negative-epochs":
        args += ["--epochs", "-1"]
    elif case == "pickle-weights":
        torch.save({"w": torch.nn.Linear(1, 1)}, tmp_path / "model.pth")  # a pickled module, not tensors
        args += ["--weights", str(tmp_path / "model.pth")]
    elif case == "truncated-snapshot":
        snap = tmp_path / "w" / "t" / "checkpoints" / "last.safetensors"
        snap.parent.mkdir(parents=True)
        snap.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
        args += ["--resume"]
    code, _, err = run_cli(args, capsys)
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("Error: ") and expect in lines[-1], err
    assert "Traceback" not in err
