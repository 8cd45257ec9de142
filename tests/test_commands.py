"""The four commands exactly as a user types them, in one workdir, on the tiny config:
``train-teacher --backbone resnet50`` → ``distill --teacher resnet50 --student resnet18`` →
``evaluate --metrics aap ajs pms`` (every run, grouped by teacher) → ``visualize --image PATH``;
``--json -`` and tables at 80 columns."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TINY_CONFIG, run_cli


def _run_captured(args: list[str]) -> tuple[int, str, str]:
    """``p2p ARGS`` in-process with stdout and stderr captured (usable in a module-scoped fixture)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code, _, _ = run_cli(args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The walkthrough's training commands run once at 80 columns, in the default workdir ./runs:
    the folder and (exit code, stdout, stderr) of each."""
    work = tmp_path_factory.mktemp("walk")
    (work / "tiny.yaml").write_text(TINY_CONFIG)
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    mp.setenv("COLUMNS", "80")
    out: dict = {"work": work}
    try:
        for key, args in (("train", ["train-teacher", "--backbone", "resnet50", "--config", "tiny.yaml"]),
                          ("distill", ["distill", "--teacher", "resnet50", "--student", "resnet18"]),
                          ("baseline", ["distill", "--teacher", "resnet50", "--student", "resnet18",
                                        "--method", "none", "-q"])):
            out[key] = _run_captured([*args, "--device", "cpu"])
    finally:
        mp.undo()
    return out


@pytest.fixture()
def in_work(walkthrough: dict, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(walkthrough["work"])
    monkeypatch.setenv("COLUMNS", "80")
    return walkthrough["work"]


def test_train_then_distill_as_written(walkthrough):
    work = walkthrough["work"]
    for key in ("train", "distill", "baseline"):
        assert walkthrough[key][0] == 0, walkthrough[key][2]
    assert (work / "runs" / "resnet50" / "model.safetensors").is_file()
    assert (work / "runs" / "resnet18-proto2proto" / "model.safetensors").is_file()
    import yaml

    student = yaml.safe_load((work / "runs" / "resnet18-proto2proto" / "config.yaml").read_text())
    assert student["backbone"] == "resnet18" and student["teacher_run"]["name"] == "resnet50"
    # the data, grid and schedule come from the teacher's run, not the defaults
    assert (student["synthetic_classes"], student["image_size"], student["epochs"], student["feature_stride"]) == \
        (3, 32, 3, 16)


def test_training_tables_at_80_columns_cut_nothing_and_show_weighted_terms(walkthrough):
    for key in ("train", "distill"):
        code, out, err = walkthrough[key]
        assert "…" not in err
        assert all(len(line) <= 80 for line in err.splitlines()), err
        assert out.startswith(f"runs{os.sep}resnet") and "test accuracy" in out
    train = walkthrough["train"][2]
    assert "0.8·clst" in train and "-0.08·sep" in train and "total = the sum of the weighted terms" in train
    distill = walkthrough["distill"][2]
    assert "10·ppc" in distill and "10·global" in distill
    line = "no --config: the settings of teacher run 'resnet50': synthetic data, 32 px, 3 epochs; estimated time"
    assert line in " ".join(distill.split())


def test_evaluate_without_model_groups_every_run_by_teacher(in_work, capsys):
    code, out, err = run_cli(["evaluate", "--metrics", "aap", "ajs", "pms", "--device", "cpu"], capsys)
    assert code == 0, err
    assert "teacher resnet50 and its students resnet18-none, resnet18-proto2proto" in out
    student = next(line for line in out.splitlines() if line.startswith("│ resnet18-proto2proto"))
    assert "proto2proto student" in student
    assert "baseline" in next(line for line in out.splitlines() if line.startswith("│ resnet18-none"))
    for metric in ("AAP", "AJS", "PMS"):
        assert metric in out
    assert "…" not in out and all(len(line) <= 80 for line in out.splitlines())


def test_evaluate_json_to_stdout_is_only_json(in_work, capsys):
    code, out, err = run_cli(["evaluate", "--metrics", "aap", "ajs", "pms", "--json", "-", "--device", "cpu"], capsys)
    assert code == 0, err
    checked = subprocess.run([sys.executable, "-m", "json.tool"], input=out, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    report = json.loads(out)
    (group,) = report["groups"]
    assert group["teacher"] == "resnet50" and group["baseline"] == "resnet18-none"
    row = group["models"]["resnet18-proto2proto"]
    assert {"aap", "ajs", "pms"} <= set(row) and row["role"] == "student"
    assert "AJS" in err  # the tables went to stderr


def test_visualize_explains_with_the_teacher_and_its_students(in_work, capsys, tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    code, out, err = run_cli(["visualize", "--image", str(folder / "a.png"), "--device", "cpu", "-q"], capsys)
    assert code == 0, err
    assert (in_work / "runs" / "visualizations" / "a" / "explanation.png").is_file()
    code, out, err = run_cli(["visualize", "--image", str(folder / "*.png"), "--out", str(tmp_path / "o"),
                              "--json", "-", "--device", "cpu"], capsys)
    assert code == 0, err
    summaries = json.loads(out)["images"]
    assert [Path(s["image"]).name for s in summaries] == ["a.png", "b.png"]
    assert [m["name"] for m in summaries[0]["models"]] == ["resnet50", "resnet18-none", "resnet18-proto2proto"]
    for name in ("a", "b"):
        html = tmp_path / "o" / name / "index.html"
        assert html.stat().st_size < 3_000_000
        assert (tmp_path / "o" / name / "explanation.png").stat().st_size < 1_000_000


def test_visualize_similarities_equal_evaluates(in_work, tmp_path):
    """For a test image, visualize's similarities are evaluate's (same weights, same precision)."""
    from p2p_cli.api import evaluate, explain, load_run
    from p2p_cli.data.loaders import load_dataset_index
    from p2p_cli.evaluation.cache import load_activations

    evaluate(["resnet18-proto2proto"], teacher="resnet50", metrics=["acc"], save_activations=tmp_path / "acts",
             workdir="runs", device="cpu", cache=False)
    acts, _ = load_activations(tmp_path / "acts" / "resnet18-proto2proto.safetensors")
    run = load_run("resnet18-proto2proto", "runs")
    image = load_dataset_index(run.config).test[0].path
    result = explain(image, models=["resnet18-proto2proto"], workdir="runs", device="cpu", out=tmp_path / "v")
    for t in result.summary["models"][0]["top_k"]:
        d = float(acts.min_dist[0, t["prototype"]])
        assert t["similarity"] == pytest.approx(np.log((d + 1) / (d + 1e-4)), rel=1e-4)


def test_teacher_that_is_a_backbone_name_says_how_to_train_it(in_work, capsys):
    code, out, err = run_cli(["distill", "--teacher", "resnet34", "--student", "resnet18"], capsys)
    assert code == 2 and out == ""
    assert err.strip() == "Error: no teacher run 'resnet34' in runs; train it first: p2p train-teacher --backbone " \
                          "resnet34"


def test_evaluate_in_an_empty_workdir_says_how_to_make_a_run(tmp_path, capsys):
    code, out, err = run_cli(["evaluate", "--workdir", str(tmp_path)], capsys)
    assert code == 2 and out == ""
    assert err.startswith("Error: no finished run in") and "p2p train-teacher --backbone resnet50" in err


def test_importing_the_cli_loads_no_torch():
    probe = "import sys, p2p_cli.cli.app; print([m for m in ('torch', 'timm', 'matplotlib') if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
