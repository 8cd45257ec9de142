"""`p2p distill` end to end on the tiny synthetic set: a complete run, a frozen teacher,
the baseline equals train-teacher, and clear errors before any training."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from p2p_cli.io.checkpoint import load_tensors, read_metadata, save_tensors, weights_hash
from p2p_cli.workflows import distill as distill_mod
from tests.conftest import run_cli, teacher_workdir


@pytest.fixture(scope="module")
def workdir(shared_teacher, tmp_path_factory):
    """A workdir with the tiny teacher `t` (a copy of the session's) for the tests of this module."""
    return teacher_workdir(shared_teacher, tmp_path_factory.mktemp("distill"), "t")


def test_proto2proto_student_run_is_complete_and_the_teacher_stays_frozen(workdir, capsys, monkeypatch):
    captured = {}
    real_load = distill_mod.load_teacher

    def spy(*args, **kwargs):
        out = real_load(*args, **kwargs)
        captured["model"] = out.model
        captured["before"] = {k: v.clone() for k, v in out.model.state_dict().items()}
        return out

    monkeypatch.setattr(distill_mod, "load_teacher", spy)
    code, out, err = run_cli(["distill", "--config", str(workdir / "tiny.yaml"), "--teacher", "t", "--student",
                              "resnet18", "--workdir", str(workdir), "--name", "s", "--device", "cpu"], capsys)
    assert code == 0, err
    run = workdir / "s"
    for name in ("config.yaml", "model.safetensors", "prototypes.json", "metrics.jsonl"):
        assert (run / name).is_file(), name
    # the teacher: bit-identical weights and BN statistics, no gradients, eval mode
    teacher = captured["model"]
    after = teacher.state_dict()
    assert all(torch.equal(captured["before"][k], after[k]) for k in after)
    assert not teacher.training and all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    # the run records its teacher and method
    meta = read_metadata(run / "model.safetensors")
    tensors, _ = load_tensors(workdir / "t" / "model.safetensors")
    assert meta["teacher"]["name"] == "t" and meta["teacher"]["weights_hash"] == weights_hash(tensors)
    assert meta["method"] == "proto2proto"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["teacher_run"]["name"] == "t" and cfg["method"] == "proto2proto"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    warm = records[0]
    assert warm["stage"] == "warm" and "ce" not in warm and {"ppc", "global"} <= warm.keys()
    assert {"ce", "clst", "sep", "ppc", "global"} <= records[1].keys()


def test_baseline_student_equals_train_teacher(workdir, capsys):
    args = ["--config", str(workdir / "tiny.yaml"), "--workdir", str(workdir), "--device", "cpu", "-q"]
    code, _, err = run_cli(["distill", *args, "--teacher", "t", "--student", "resnet18", "--method", "none",
                            "--name", "base"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["train-teacher", *args, "--backbone", "resnet18", "--name", "direct"], capsys)
    assert code == 0, err
    a, _ = load_tensors(workdir / "base" / "model.safetensors")
    b, _ = load_tensors(workdir / "direct" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("flags, message", [
    (["--teacher", "nobody"], "model 'nobody' not found"),
    (["--teacher", "fake"], "not a p2p model"),
    (["--teacher", "t", "--prototypes-per-class", "3"], "teacher m = 6, student m = 9"),
    (["--teacher", "t", "--prototype-depth", "16"], "teacher D = 8, student D = 16"),
    (["--teacher", "t", "--feature-stride", "32"], "teacher 2×2, student 1×1"),
    (["--teacher", "t", "--student", "resnet19"], "unknown backbone 'resnet19'"),
    (["--teacher", "t", "--method", "distil"], "must be one of"),
])
def test_errors_before_training(workdir, capsys, flags, message):
    fake = workdir / "fake"
    if not fake.exists():
        fake.mkdir()
        (fake / "config.yaml").write_text("a: 1\n")
        save_tensors(fake / "model.safetensors", {"x": torch.zeros(1)}, {})
    code, _, err = run_cli(["distill", "--config", str(workdir / "tiny.yaml"), "--workdir", str(workdir),
                            "--name", "never", "--device", "cpu", *flags], capsys)
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert not (workdir / "never").exists()


@pytest.mark.slow
def test_sigkill_mid_distillation_then_resume_equals_uninterrupted(workdir):
    """Distillation resumes like train-teacher: killed in a joint epoch, --resume ends bit-identical."""
    from tests.test_cli_train import assert_kill_and_resume_equals_uninterrupted

    common = ["distill", "--config", str(workdir / "tiny.yaml"), "--teacher", "t", "--student", "resnet18",
              "--workdir", str(workdir), "--device", "cpu", "-q"]
    assert_kill_and_resume_equals_uninterrupted(common, workdir, "rs-full", "rs-cut")
