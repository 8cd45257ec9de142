"""ProtoTree end to end on the tiny synthetic set: train-teacher, evaluate, distill, visualize."""

from __future__ import annotations

import json

import pytest
import torch

from p2p_cli.io.checkpoint import read_metadata
from p2p_cli.models.factory import load_model
from tests.conftest import TINY_CONFIG, run_cli

TREE = ["--arch", "prototree", "--depth", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny trained ProtoTree teacher `t` shared by the tests of this module."""
    work = tmp_path_factory.mktemp("prototree")
    (work / "tiny.yaml").write_text(TINY_CONFIG)
    return work


@pytest.fixture(scope="module")
def teacher(work):
    code, _, _ = run_cli(["train-teacher", "--config", str(work / "tiny.yaml"), "--workdir", str(work), "--name", "t",
                          "-q", *TREE])
    assert code == 0, "training the tiny ProtoTree failed"
    return work / "t"


def test_train_teacher_writes_a_complete_tree_run(teacher):
    for name in ("config.yaml", "model.safetensors", "prototypes.json", "metrics.jsonl"):
        assert (teacher / name).is_file(), name
    meta = read_metadata(teacher / "model.safetensors")
    assert meta["arch"] == "prototree" and meta["stage"] == "final"
    assert meta["model_config"]["depth"] == 2
    rows = [json.loads(line) for line in (teacher / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["warm", "joint", "joint", "prune_tree", "push"]
    prune = rows[3]
    assert prune["leaves_before"] == 4 and prune["prototypes_before"] == 3
    assert prune["leaves_after"] <= 4 and "nll" in rows[0]
    model, _ = load_model(teacher / "model.safetensors")
    assert model.num_leaves == prune["leaves_after"]
    doc = json.loads((teacher / "prototypes.json").read_text())
    assert len(doc["prototypes"]) == model.num_prototypes
    # derivative-free leaves: proper distributions; with K = 3 no leaf can have max σ ≤ 0.01, so
    # nothing was pruned, and after an epoch c holds that epoch's soft counts (the update removes
    # c_epoch-start / n_batches per batch and adds responsibilities that sum to 1 per image):
    # Σ c = the 18 training images of the last epoch (3 batches of 6)
    dists = model.leaf_distributions()
    assert torch.allclose(dists.sum(1), torch.ones(model.num_leaves), atol=1e-5)
    assert prune["leaves_after"] == 4 and float(model.leaf_params.min()) >= 0
    assert float(model.leaf_params.sum()) == pytest.approx(18.0, abs=1e-3)


def test_evaluate_accepts_a_tree_run_and_reports_its_inference_modes(teacher, work, capsys, tmp_path):
    out = tmp_path / "eval.json"
    code, stdout, err = run_cli(["evaluate", "--model", "t", "--workdir", str(work), "--device", "cpu",
                                 "--json", str(out)], capsys)
    assert code == 0, err
    report = json.loads(out.read_text())
    row = report["models"]["t"]
    assert row["pms"] == pytest.approx(1.0) and row["ajs"]["inf"] == pytest.approx(1.0)
    modes = row["tree"]["modes"]
    assert set(modes) == {"distributed", "sample_max", "greedy"}
    assert modes["distributed"]["acc"] == pytest.approx(row["acc"]) and modes["distributed"]["fidelity"] == 1.0
    assert "inference modes" in stdout


def test_distill_tree_student_takes_the_teacher_shape_and_the_teacher_stays_frozen(teacher, work, capsys):
    before = load_model(teacher / "model.safetensors")[0].state_dict()
    code, _, err = run_cli(["distill", "--config", str(work / "tiny.yaml"), "--workdir", str(work), "--teacher", "t",
                            "--student", "resnet18", "--name", "s", "--epochs", "2", "-q", *TREE], capsys)
    assert code == 0, err
    t_model, _ = load_model(teacher / "model.safetensors")
    for k, v in t_model.state_dict().items():
        assert torch.equal(v, before[k]), k
    s_model, meta = load_model(work / "s" / "model.safetensors")
    assert meta["arch"] == "prototree" and meta["method"] == "proto2proto"
    rows = [json.loads(line) for line in (work / "s" / "metrics.jsonl").read_text().splitlines()]
    assert "global" in rows[0] and "ppc" in rows[0] and "nll" in rows[1]
    assert s_model.num_leaves <= t_model.num_leaves


def test_distill_refuses_an_architecture_mismatch(teacher, work, capsys):
    code, _, err = run_cli(["distill", "--config", str(work / "tiny.yaml"), "--workdir", str(work), "--teacher", "t",
                            "--student", "resnet18", "--name", "bad", "--device", "cpu"], capsys)
    assert code != 0 and "--arch prototree" in err


def test_visualize_writes_the_decision_path_and_the_tree(teacher, work, capsys, tmp_path):
    from p2p_cli.data.loaders import load_dataset_index
    from p2p_cli.io.config import config_from_dict
    from p2p_cli.io.rundir import RunDir

    cfg = config_from_dict(RunDir(teacher).read_config(), source="t")
    image = load_dataset_index(cfg).test[0].path
    out = tmp_path / "vis"
    code, stdout, err = run_cli(["visualize", "--image", str(image), "--model", "t", "--workdir", str(work),
                                 "--device", "cpu", "--out", str(out), "--json", str(tmp_path / "v.json")], capsys)
    assert code == 0, err
    for name in ("decision_path-t.png", "tree-t.png", "index.html"):
        assert (out / name).stat().st_size > 1000, name
    summary = json.loads((tmp_path / "v.json").read_text())
    tree = summary["trees"][0]
    assert 1 <= len(tree["path"]) <= 2 and all(st["direction"] in ("left", "right") for st in tree["path"])
    assert "greedy path" in stdout or "greedy path" in err


def test_prune_command_explains_that_trees_prune_themselves(teacher, work, capsys):
    code, _, err = run_cli(["prune", "--model", "t", "--workdir", str(work), "--device", "cpu"], capsys)
    assert code != 0 and "prune_threshold" in err and "Traceback" not in err


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(teacher, work):
    """Leaves updated without gradients live in the snapshot too: a resumed tree is bit-identical."""
    import subprocess
    import sys

    from p2p_cli.io.checkpoint import load_tensors
    from tests.test_cli_train import assert_killed_at_snapshot

    args = ["train-teacher", "--config", str(work / "tiny.yaml"), "--workdir", str(work), "--name", "cut", "-q", *TREE]
    # steps: 0 warm, 1 joint, 2 joint, 3 prune_tree, 4 push -> killed once step 0 is done
    assert_killed_at_snapshot(args, work / "cut", step=1, total=5)
    resumed = subprocess.run([sys.executable, "-m", "p2p_cli", *args, "--resume"], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a, _ = load_tensors(teacher / "model.safetensors")
    b, _ = load_tensors(work / "cut" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
