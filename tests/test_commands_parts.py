"""The pieces behind the four commands, on tiny hand-worked inputs: tables split instead of cut,
weighted loss terms, the estimated time, runs grouped by teacher, a student's inherited settings,
and visualize's image arguments."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from p2p_cli.errors import P2PError
from p2p_cli.io.config import TrainConfig
from p2p_cli.runtime.reporter import Reporter, print_fitted
from p2p_cli.workflows import train_defaults
from p2p_cli.workflows.distill import distill_config
from p2p_cli.workflows.evaluate_groups import Group, group_runs
from p2p_cli.workflows.train_defaults import CPU_SCHEDULE, EstimatingReporter, default_schedule, estimated_seconds
from p2p_cli.workflows.visualize import expand_images


def _console(width: int) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=width, color_system=None), buf


# -- tables ------------------------------------------------------------------------------------------

def test_a_table_wider_than_the_console_is_split_and_repeats_its_key_column():
    # widths: k 1, a 4, b 2 → "│ x │ 1234 │" is 1 + (1+3) + (4+3) = 12 wide; adding b (2+3) makes 17 > 15
    console, buf = _console(15)
    print_fitted(console, "t", ["k", "a", "b"], [["x", "1234", "56"]])
    text = buf.getvalue()
    assert "t (1/2)" in text and "t (2/2)" in text and "…" not in text
    first, second = text.split("t (2/2)")
    assert "1234" in first and "56" not in first and "56" in second and "1234" not in second
    assert text.count("│ x │") == 2  # the key column in both parts
    assert max(len(line) for line in text.splitlines()) <= 15
    console, buf = _console(17)  # exactly wide enough: one table
    print_fitted(console, "t", ["k", "a", "b"], [["x", "1234", "56"]])
    assert "(1/2)" not in buf.getvalue() and max(len(line) for line in buf.getvalue().splitlines()) == 17


def test_stage_tables_show_the_weighted_terms_that_add_up_to_the_total():
    console, buf = _console(200)
    rep = Reporter(console=console)
    rep.loss_weights = {"ce": 1.0, "clst": 0.8, "sep": -0.08, "l1": 1e-4}
    # total = 1 + 0.8·2 − 0.08·5 + 1e-4·100 = 1 + 1.6 − 0.4 + 0.01 = 2.21
    rep.table("stage joint", [{"epoch": 1, "ce": 1.0, "clst": 2.0, "l1": 100.0, "sep": 5.0, "total": 2.21,
                               "train_acc": 0.5}])
    text = buf.getvalue()
    header = next(line for line in text.splitlines() if "epoch" in line)
    assert [c.strip() for c in header.strip("┃ ").split("┃")] == \
        ["epoch", "ce", "0.8·clst", "-0.08·sep", "0.0001·l1", "total", "train_acc"]
    row = next(line for line in text.splitlines() if line.startswith("│"))
    assert [c.strip() for c in row.strip("│ ").split("│")] == ["1", "1", "1.6", "-0.4", "0.01", "2.21", "0.5"]
    assert "total = the sum of the weighted terms" in text
    console, buf = _console(200)
    Reporter(console=console).table("stage joint", [{"epoch": 1, "ce": 1.0, "total": 1.0}])
    assert "(loss terms unweighted)" in buf.getvalue()


def test_distillation_tables_show_the_transfer_terms_instead_of_their_sum():
    console, buf = _console(200)
    rep = Reporter(console=console)
    rep.loss_weights = train_defaults.loss_weights(TrainConfig(lambda_global=10.0, lambda_ppc=2.0))
    rep.table("stage warm", [{"epoch": 1, "global": 0.5, "ppc": 1.5, "transfer": 8.0, "total": 8.0}])
    header = next(line for line in buf.getvalue().splitlines() if "epoch" in line)
    assert "transfer" not in header and "2·ppc" in header and "10·global" in header
    row = next(line for line in buf.getvalue().splitlines() if line.startswith("│"))
    assert [c.strip() for c in row.strip("│ ").split("│")] == ["1", "3", "5", "8"]  # 2·1.5 + 10·0.5 = 8


# -- the built-in schedule and its estimate -------------------------------------------------------------

def test_no_config_means_the_cpu_schedule_on_a_cpu_and_the_paper_like_one_on_a_gpu():
    label, values = default_schedule("cpu")
    assert values == CPU_SCHEDULE and "CPU-sized" in label
    label, values = default_schedule("cuda")
    assert values == {} and "paper-like" in label


def test_the_cpu_schedule_weakens_the_prototype_terms_for_bottleneck_resnets_only():
    assert default_schedule("cpu", "resnet34")[1] == CPU_SCHEDULE
    values = default_schedule("cpu", "resnet50")[1]
    assert (values["lambda_clst"], values["lambda_sep"]) == (0.08, -0.008)
    assert {k: v for k, v in values.items() if not k.startswith("lambda_")} == {
        k: v for k, v in CPU_SCHEDULE.items() if not k.startswith("lambda_")}
    assert default_schedule("cuda", "resnet50")[1] == {}


def test_the_schedule_line_names_the_settings_and_the_time():
    cfg = TrainConfig(image_size=112, epochs=1)
    assert train_defaults.schedule_line(cfg, "X", 42.4) == (
        "no --config: X: synthetic data, 112 px, 1 epoch; estimated time about 42 s (measured from the first "
        "steps); the paper's settings: examples/")
    assert "about 5 min" in train_defaults.schedule_line(cfg, "X", 5 * 60 + 10)


def test_estimated_seconds_counts_training_and_forward_passes():
    cfg = TrainConfig(epochs=2, warm_epochs=1, eval_every=1, repeats=1)
    # trained 2·100 = 200 images; forward (2 test evaluations + 2) · 50 + 2 · 100 = 400 at 0.35
    assert estimated_seconds(cfg, 0.01, train_images=100, test_images=50) == pytest.approx(0.01 * (200 + 140))


def test_the_estimate_is_measured_after_one_warm_up_batch(monkeypatch):
    ticks = iter([10.0, 11.0, 12.0, 13.0, 99.0])
    monkeypatch.setattr(train_defaults.time, "perf_counter", lambda: next(ticks))
    console, buf = _console(200)
    seen = []
    rep = EstimatingReporter(Reporter(console=console), lambda s: seen.append(s) or f"per image {s}", batch_size=2)
    with rep.task("push", 3) as advance:  # not a training epoch: not timed
        advance()
    with rep.task("epoch 1/3 warm", 5) as advance:
        for _ in range(4):
            advance()
    assert seen == [pytest.approx(3.0 / (3 * 2))]  # batches 2-4 took 3 s for 6 images
    assert "per image 0.5" in buf.getvalue()


# -- runs grouped by teacher -------------------------------------------------------------------------

def _run(work: Path, name: str, config: dict) -> Path:
    (work / name).mkdir(parents=True)
    (work / name / "config.yaml").write_text(yaml.safe_dump(config))
    (work / name / "model.safetensors").write_bytes(b"")
    return work / name


def test_runs_are_grouped_by_the_teacher_they_record(tmp_path):
    t1 = _run(tmp_path, "t1", {"command": "train-teacher"})
    _run(tmp_path, "t2", {"command": "train-teacher"})
    _run(tmp_path, "s2", {"command": "distill", "teacher_run": {"name": "t1", "path": str(t1.resolve())}})
    _run(tmp_path, "s1", {"command": "distill", "teacher_run": {"name": "t1", "path": str(t1)}})
    _run(tmp_path, "orphan", {"command": "distill", "teacher_run": {"name": "gone", "path": "/nowhere/gone"}})
    assert group_runs(tmp_path) == [Group("/nowhere/gone", ["orphan"]), Group("t1", ["s1", "s2"]), Group("t2", [])]


def test_a_baseline_is_recognised_by_its_method_or_as_a_from_scratch_run_of_the_students_backbone(tmp_path):
    data = {"dataset": "synthetic", "image_size": 32}
    t = _run(tmp_path, "t", {**data, "command": "train-teacher", "backbone": "resnet50"})
    student = {**data, "command": "distill", "backbone": "resnet18", "teacher_run": {"name": "t", "path": str(t)}}
    _run(tmp_path, "p2p", {**student, "method": "proto2proto"})
    _run(tmp_path, "small", {**data, "command": "train-teacher", "backbone": "resnet18"})  # the paper's baseline
    _run(tmp_path, "other", {**data, "image_size": 64, "command": "train-teacher", "backbone": "resnet18"})
    assert group_runs(tmp_path) == [Group("other", []), Group("t", ["p2p", "small"], "small")]
    _run(tmp_path, "none", {**student, "method": "none"})  # a distilled baseline wins
    assert group_runs(tmp_path) == [Group("other", []), Group("small", []), Group("t", ["none", "p2p"], "none")]


def test_an_empty_workdir_says_how_to_make_a_run(tmp_path):
    with pytest.raises(P2PError, match="p2p train-teacher --backbone resnet50"):
        group_runs(tmp_path)


# -- a student's settings ---------------------------------------------------------------------------

def test_a_student_takes_its_teachers_settings_unless_told_otherwise(tmp_path):
    teacher = {**TrainConfig().to_dict(), "command": "train-teacher", "backbone": "resnet50", "image_size": 48,
               "synthetic_classes": 4, "epochs": 3, "warm_epochs": 1, "feature_stride": 16, "lambda_global": 3.0,
               "pretrained": True}
    _run(tmp_path, "t", teacher)
    cfg, label = distill_config(None, {"teacher": "t", "backbone": "resnet18"}, tmp_path)
    assert (cfg.backbone, cfg.image_size, cfg.synthetic_classes, cfg.epochs, cfg.feature_stride) == \
        ("resnet18", 48, 4, 3, 16)
    assert cfg.lambda_global == 10.0 and cfg.pretrained is False  # the student's own keys keep their defaults
    assert label == "the settings of teacher run 't'"
    config = tmp_path / "s.yaml"
    config.write_text("epochs: 5\nteacher: t\n")
    cfg, label = distill_config(config, {"epochs": "7", "backbone": "resnet18"}, tmp_path)
    assert (cfg.epochs, cfg.image_size, label) == (7, 48, None)  # flag > file > teacher
    cfg, _ = distill_config(config, {"backbone": "resnet18"}, tmp_path)
    assert cfg.epochs == 5


def test_a_teacher_named_like_a_backbone_but_not_trained_says_which_command_trains_it(tmp_path):
    with pytest.raises(P2PError, match=r"train it first: p2p train-teacher --backbone vgg16 --workdir "):
        distill_config(None, {"teacher": "vgg16"}, tmp_path)
    with pytest.raises(P2PError, match="model 'nothing' not found"):
        distill_config(None, {"teacher": "nothing"}, tmp_path)


# -- visualize's images --------------------------------------------------------------------------------

def test_images_from_files_folders_and_globs(tmp_path):
    for name in ("a.png", "b.jpg", "notes.txt", "sub/c.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert expand_images([tmp_path / "b.jpg"]) == [tmp_path / "b.jpg"]
    assert expand_images([tmp_path]) == [tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "sub" / "c.png"]
    assert expand_images([str(tmp_path / "*.png"), tmp_path / "a.png", str(tmp_path / "*.jpg")]) == \
        [tmp_path / "a.png", tmp_path / "b.jpg"]
    with pytest.raises(P2PError, match="no file matches"):
        expand_images([str(tmp_path / "*.gif")])
    with pytest.raises(P2PError, match="no such file or folder"):
        expand_images([tmp_path / "missing.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(P2PError, match="no image found"):
        expand_images([tmp_path / "empty"])
