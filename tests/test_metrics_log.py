"""metrics.csv (atomic rewrite, union of columns in a stable order) and TensorBoard event files."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from p2p_cli.errors import P2PError
from p2p_cli.io.metrics_log import (
    RunLogs,
    TensorBoardLog,
    csv_columns,
    lr_fields,
    metrics_csv_text,
    read_metrics_csv,
    write_metrics_csv,
)

RECORDS = [
    {"epoch": 1, "stage": "warm", "ce": 1.0986122886681098, "clst": 1.3, "l1": 6.0, "sep": 1.1, "total": 2.07,
     "train_acc": 0.3888888888888889, "test_acc": 0.2222222238779068, "lr": 0.003, "seconds": 0.5},
    {"epoch": 2, "stage": "joint", "ce": 1.17, "clst": 1.33, "l1": 6.0, "sep": 1.09, "total": 2.16,
     "train_acc": 0.22, "test_acc": 0.22, "lr": 0.001, "lr_backbone": 0.001, "seconds": 0.51},
    {"epoch": 2, "stage": "push", "push_distance": 0.0123, "test_acc": 0.33, "seconds": 0.2},
    {"epoch": 2, "stage": "last_layer", "ll_epoch": 1, "ce": 1.0, "l1": 5.9, "total": 1.0, "train_acc": 0.39,
     "test_acc": 0.33, "seconds": 0.01},
]


def test_columns_are_the_union_in_a_stable_order():
    assert csv_columns(RECORDS) == ["epoch", "stage", "ll_epoch", "ce", "clst", "l1", "sep", "total", "lr_backbone",
                                    "push_distance", "train_acc", "test_acc", "lr", "seconds"]
    assert csv_columns(RECORDS[:1]) == ["epoch", "stage", "ce", "clst", "l1", "sep", "total", "train_acc",
                                        "test_acc", "lr", "seconds"]


def test_write_and_read_back(tmp_path: Path):
    path = tmp_path / "metrics.csv"
    write_metrics_csv(path, RECORDS)
    rows = list(csv.reader(path.open()))
    assert len(rows) == 1 + len(RECORDS)
    assert rows[3][rows[0].index("ce")] == ""  # the push row has no loss terms
    back = read_metrics_csv(path)
    assert back == RECORDS  # exact: floats keep every digit, missing keys stay missing
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # atomic: no temporary file left


def test_rewrite_after_every_step_widens_the_table(tmp_path: Path):
    path = tmp_path / "metrics.csv"
    for n in range(1, len(RECORDS) + 1):
        write_metrics_csv(path, RECORDS[:n])
        assert read_metrics_csv(path) == RECORDS[:n]
    assert path.read_text() == metrics_csv_text(RECORDS)


def test_special_values():
    text = metrics_csv_text([{"epoch": 1, "stage": "s", "x": float("nan"), "y": float("inf"), "flag": True,
                              "grid": [2, 2], "none": None}])
    assert text.splitlines()[1] == '1,s,nan,inf,true,"[2, 2]",'


def test_lr_fields():
    groups = [{"lr": 1e-3, "name": "backbone"}, {"lr": 3e-3, "name": "add_on"}, {"lr": 5e-4}]
    assert lr_fields(groups) == {"lr": 1e-3, "lr_backbone": 1e-3, "lr_add_on": 3e-3}
    assert lr_fields([]) == {}


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_scalars(tmp_path: Path):
    pytest.importorskip("tensorboard")
    logs = RunLogs(tmp_path, tensorboard=True)
    logs.update(RECORDS[:2])
    logs.update(RECORDS)  # the trainer passes its whole list after every step; each record is written once
    logs.close()
    assert read_metrics_csv(tmp_path / "metrics.csv") == RECORDS
    scalars = _scalars(tmp_path / "tensorboard")
    assert [s for s, _ in scalars["loss/total"]] == [0, 1, 3]
    assert scalars["loss/ce"][0] == (0, pytest.approx(1.0986122886681098))
    assert [v for _, v in scalars["accuracy/test"]] == pytest.approx([r["test_acc"] for r in RECORDS])
    assert scalars["push/push_distance"] == [(2, pytest.approx(0.0123))]
    assert scalars["lr/backbone"] == [(1, pytest.approx(0.001))] and len(scalars["lr/lr"]) == 2
    assert "time/seconds" in scalars and not any(t.endswith("/epoch") for t in scalars)


def test_tensorboard_resume_continues_the_steps(tmp_path: Path):
    pytest.importorskip("tensorboard")
    first = TensorBoardLog(tmp_path / "tb")
    first.log_records(RECORDS[:2])
    first.close()
    resumed = TensorBoardLog(tmp_path / "tb", start=2)
    assert resumed.log_records(RECORDS) == 2
    resumed.close()
    assert [s for s, _ in _scalars(tmp_path / "tb")["accuracy/test"]] == [0, 1, 2, 3]


def test_missing_tensorboard_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import → ImportError
    with pytest.raises(P2PError) as exc:
        RunLogs(tmp_path, tensorboard=True)
    assert str(exc.value) == ("--log tensorboard needs the tensorboard package: pip install 'p2p-cli[tensorboard]' "
                              "(or pip install tensorboard)")
    RunLogs(tmp_path).update(RECORDS)  # metrics.csv alone needs nothing
    assert (tmp_path / "metrics.csv").is_file()
