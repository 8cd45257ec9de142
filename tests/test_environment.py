"""environment.json: the reproducibility record of a run."""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
from pathlib import Path

import torch

import p2p_cli
from p2p_cli.runtime import environment
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.environment import environment_record, git_commit, package_version
from p2p_cli.runtime.hardware import cpu_capabilities, cpu_has_native_bf16


def test_record_contents():
    rt = Runtime(device=torch.device("cpu"), amp_dtype=torch.bfloat16, channels_last=True, rank=0, world_size=1)
    argv = ["/venv/bin/p2p", "train-teacher", "--name", "my run", "--lr-backbone", "1e-3"]
    rec = environment_record(rt, argv)
    assert json.loads(json.dumps(rec)) == rec  # plain JSON
    assert rec["p2p"]["version"] == p2p_cli.__version__
    assert rec["python"]["version"] == platform.python_version()
    assert rec["packages"]["torch"] == package_version("torch") and rec["packages"]["torch"]
    assert rec["packages"]["torchvision"] and rec["packages"]["timm"]
    assert rec["runtime"] == {"device": "cpu", "precision": "bf16", "channels_last": True}
    assert rec["distributed"] == {"world_size": 1, "rank": 0}
    assert rec["threads"]["torch"] == torch.get_num_threads()
    assert rec["command"]["argv"] == argv and shlex.split(rec["command"]["line"]) == argv
    assert rec["cpu"]["native_bf16"] == cpu_has_native_bf16()
    caps = cpu_capabilities()
    assert rec["cpu"]["flags"] == {k: bool(caps[k]) for k in environment.PRECISION_FLAGS if k in caps}


def test_world_size_and_fp32():
    rt = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False, rank=1, world_size=4)
    rec = environment_record(rt, ["p2p"])
    assert rec["runtime"]["precision"] == "fp32" and rec["distributed"] == {"world_size": 4, "rank": 1}


def test_git_commit_of_a_checkout_and_of_no_checkout(tmp_path: Path):
    assert git_commit(str(tmp_path)) is None
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("x")
    subprocess.run(["git", "-C", str(tmp_path), "add", "f"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"],
                   check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    git_commit.cache_clear()  # one answer per path and process
    assert git_commit(str(tmp_path)) == {"commit": head, "dirty": False}
    (tmp_path / "f").write_text("changed")
    git_commit.cache_clear()
    assert git_commit(str(tmp_path)) == {"commit": head, "dirty": True}


def test_defaults_to_sys_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["p2p", "distill", "--teacher", "t"])
    rt = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)
    assert environment_record(rt)["command"]["argv"] == ["p2p", "distill", "--teacher", "t"]


def test_p2p_source_commit():
    src = Path(p2p_cli.__file__).resolve().parent
    probe = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    expected = probe.stdout.strip() if probe.returncode == 0 else None
    assert (git_commit() or {}).get("commit") == expected
