"""distill: train a student from a frozen teacher (Proto2Proto, Keswani et al. CVPR 2022, or a KD baseline).

Orchestration only: load the teacher, build the student, check that the two fit together, and
run the same :class:`~p2p_cli.training.trainer.Trainer` as train-teacher under the distillation
objective (:mod:`p2p_cli.training.distillation`). ``--method none`` is the baseline student:
exactly train-teacher's objective on the small backbone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from p2p_cli.data.loaders import build_datasets
from p2p_cli.errors import P2PError
from p2p_cli.io.checkpoint import weights_hash
from p2p_cli.io.config import TrainConfig
from p2p_cli.io.rundir import RunDir
from p2p_cli.losses.registry import get_method
from p2p_cli.models.factory import build_model
from p2p_cli.models.protopnet import PrototypeNetwork
from p2p_cli.models.runs import LoadedRun, load_run
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.runtime.seeding import seed_everything, set_deterministic
from p2p_cli.training.distillation import DistillObjective
from p2p_cli.training.objectives import TaskObjective
from p2p_cli.training.trainer import Trainer
from p2p_cli.workflows.runs import open_run, training_adversary, write_environment, write_run_config


def load_teacher(ref: str | None, workdir: Path, rt: Runtime) -> LoadedRun:
    """Resolve and load the teacher run, check it finished training, record its weights hash
    (``LoadedRun.weights``) and move it to ``rt.device``, frozen, in eval mode."""
    if not ref:
        raise P2PError("distill needs a teacher: --teacher REF (a run directory or a run name in the workdir)")
    teacher = load_run(ref, workdir)
    if str(teacher.meta.get("stage")) != "final":
        raise P2PError(f"teacher '{ref}' is not a trained run (stage {teacher.meta.get('stage')})")
    _ = teacher.weights  # the hash of the weights as loaded, before any training
    return teacher.to(rt.device, channels_last=rt.channels_last, frozen=True)


def check_compatible(teacher: PrototypeNetwork, student: PrototypeNetwork, cfg: TrainConfig, method: str, head: str,
                     rt: Runtime, classes: list[str]) -> None:
    """Clear errors before any training: prototype count (unless a KD baseline with its own head),
    prototype depth (Proto2Proto), feature grid (Proto2Proto and the hint, which compare the two
    models cell by cell); the classes are checked by :meth:`~p2p_cli.models.runs.LoadedRun.check_classes`."""
    if method == "proto2proto" or head != "init":
        if teacher.num_prototypes != student.num_prototypes:
            if teacher.num_prototypes % len(classes):  # e.g. a pruned teacher: no prototypes_per_class fits
                raise P2PError(f"prototype count mismatch: teacher m = {teacher.num_prototypes} (not a multiple "
                               f"of its {len(classes)} classes, e.g. pruned), student m = "
                               f"{student.num_prototypes}; no student can match it — use --method hint|rkd|kd "
                               "with --head init")
            raise P2PError(f"prototype count mismatch: teacher m = {teacher.num_prototypes}, student m = "
                           f"{student.num_prototypes} (set prototypes_per_class to match)")
    if method == "proto2proto" and teacher.prototype_depth != student.prototype_depth:
        raise P2PError(f"prototype depth mismatch: teacher D = {teacher.prototype_depth}, student D = "
                       f"{student.prototype_depth} (set prototype_depth to match)")
    if method in ("proto2proto", "hint"):  # both compare the two models cell by cell on one H×W grid
        probe = torch.zeros(1, 3, cfg.image_size, cfg.image_size, device=rt.device)
        was_training = student.training
        student.eval()
        with torch.no_grad():
            grid_t = tuple(teacher.backbone(probe).shape[-2:])
            grid_s = tuple(student.backbone(probe).shape[-2:])
        student.train(was_training)
        if grid_t != grid_s:
            raise P2PError(f"feature grids differ: teacher {grid_t[0]}×{grid_t[1]}, student "
                           f"{grid_s[0]}×{grid_s[1]} at {cfg.image_size} px (choose feature_stride/image_size "
                           "so both give the same H×W)")


def distill(cfg: TrainConfig, *, workdir: Path, name: str, rt: Runtime, reporter: Reporter,
            overwrite: bool = False, resume: bool = False) -> tuple[RunDir, dict[str, Any]]:
    """Train a student of ``cfg.teacher`` with ``cfg.method`` into ``workdir/name``."""
    set_deterministic(cfg.deterministic)
    t0 = time.perf_counter()
    method = get_method(cfg.method)
    loaded = load_teacher(cfg.teacher, workdir, rt)
    teacher = loaded.model
    seed_everything(cfg.seed)
    data = build_datasets(cfg)
    student = build_model(cfg, len(data.classes), rt)
    # The baseline (--method none) is train-teacher on the small backbone: it never sees the
    # teacher's head; --head applies to the distillation methods.
    head = "init" if cfg.method == "none" else cfg.head
    if teacher.arch != student.arch:
        raise P2PError(f"teacher '{loaded.run.name}' is a {teacher.arch} but the student would be a {student.arch}; "
                       f"pass --arch {teacher.arch}")
    if cfg.method != "none":  # a tree student takes the teacher tree's shape (index-aligned prototypes)
        student.align_to(teacher, copy_head=False)
    loaded.check_classes(data.index, hint="distill on the teacher's dataset")
    check_compatible(teacher, student, cfg, cfg.method, head, rt, data.classes)
    if head in ("copy", "frozen"):  # ProtoPNet: the last layer; ProtoTree: the leaves
        student.align_to(teacher, copy_head=True)
    head_frozen = head == "frozen"
    if head_frozen:
        for p in student.parameter_groups().get("last_layer", []):
            p.requires_grad_(False)
    if cfg.method == "none":
        objective: Any = TaskObjective(cfg)
    else:
        objective = DistillObjective(cfg, teacher, method, rt, student)
    teacher_info = {"name": loaded.run.name, "path": str(loaded.run.path.resolve()), "weights_hash": loaded.weights,
                    "backbone": teacher.config.backbone}
    run = open_run(workdir, name, rt, overwrite=overwrite, resume=resume)
    if rt.is_main and not resume:
        write_run_config(run, cfg, "distill", {"teacher_run": teacher_info})
        write_environment(run, rt)
    reporter.info(f"[bold]distill[/] {name}: {teacher.config.backbone} ({loaded.run.name}) → {cfg.backbone}, "
                  f"method {cfg.method}, head {head}, fidelity {cfg.fidelity}; {student.num_prototypes} "
                  f"prototypes × D={student.prototype_depth}, device {rt.device}")
    trainer = Trainer(cfg, student, objective, data, rt, run, reporter, head_frozen=head_frozen,
                      metadata={"role": "student", "teacher": teacher_info, "method": cfg.method,
                                "head": head, "fidelity": cfg.fidelity},
                      adversary=training_adversary(cfg, rt))
    state = trainer.fit(resume=resume)
    if weights_hash(teacher.state_dict()) != loaded.weights:
        raise RuntimeError("the teacher's weights changed during distillation")  # a bug, never a user error
    last = state.records[-1] if state.records else {}
    return run, {"test_acc": last.get("test_acc"), "seconds": time.perf_counter() - t0}
