"""Which runs of a workdir ``p2p evaluate`` compares, without ``--model``: one group per teacher.

A student records the teacher it was distilled from (``teacher_run`` in its config.yaml; the
baseline student of ``distill --method none`` included). A run trained by train-teacher that no
student names is a teacher of its own, unless it is the paper's baseline for another group: a
ProtoPNet trained from scratch on the same data with a backbone of that group's students
(Proto2Proto, Keswani et al. CVPR 2022, Table 2's "baseline student").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2p_cli.errors import P2PError
from p2p_cli.io.rundir import list_runs

DATA_KEYS = ("dataset", "data_root", "image_size", "crop_bbox", "synthetic_preset", "synthetic_classes",
             "synthetic_train_per_class", "synthetic_test_per_class", "synthetic_image_size", "synthetic_seed")
"""The config keys two runs must share to be evaluated on the same images."""


@dataclass(frozen=True)
class Group:
    """A teacher, the runs compared with it (students first) and the baseline among them, if any."""

    teacher: str
    members: list[str]
    baseline: str | None = None


def _data(config: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(config.get(k) for k in DATA_KEYS)


def group_runs(workdir: Path) -> list[Group]:
    """The finished runs of ``workdir`` grouped by teacher, sorted by teacher name."""
    runs = list_runs(workdir)
    if not runs:
        raise P2PError(f"no finished run in {workdir} to evaluate; make one with: p2p train-teacher --backbone "
                       "resnet50, then p2p distill --teacher resnet50 --student resnet18")
    names = {r.path.resolve(): r.name for r in runs}
    configs = {r.name: r.read_config() for r in runs}
    students: dict[str, list[str]] = {}
    lone: list[str] = []
    for run in runs:
        rec = configs[run.name].get("teacher_run")
        if not isinstance(rec, dict):
            lone.append(run.name)
            continue
        teacher = names.get(Path(str(rec["path"])).resolve()) if rec.get("path") else None
        students.setdefault(teacher or str(rec.get("path") or rec.get("name")), []).append(run.name)
    groups: dict[str, Group] = {}
    for teacher in sorted({*students, *lone}):
        members = students.get(teacher, [])
        baseline = next((m for m in members if configs[m].get("method") == "none"), None)
        groups[teacher] = Group(teacher, members, baseline)
    for name in lone:  # a from-scratch run on a group's data with its students' backbone: that group's baseline
        cfg = configs[name]
        if students.get(name) or not cfg.get("backbone"):
            continue  # a teacher with students of its own
        owners = [g for g in groups.values() if g.members and g.baseline is None and g.teacher in configs
                  and _data(configs[g.teacher]) == _data(cfg)
                  and cfg["backbone"] in {configs[m].get("backbone") for m in g.members}]
        for g in owners:
            groups[g.teacher] = Group(g.teacher, [*g.members, name], name)
        if owners:
            del groups[name]
    return sorted(groups.values(), key=lambda g: g.teacher)
