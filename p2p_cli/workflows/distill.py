"""distill: train a student ProtoPNet from a frozen teacher (Proto2Proto, SPEC §5, or a KD baseline).

The same :class:`~p2p_cli.training.trainer.Trainer` as train-teacher runs the schedule; only the
objective differs. Stage 1 (warm epochs) optimises the transfer terms only, stage 2 (joint)
``L_ppnet + transfer`` (Eq. 6), then push and last layer as for a teacher. ``--method none``
is the baseline student: exactly train-teacher's objective on the small backbone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from p2p_cli.data.loaders import build_datasets
from p2p_cli.errors import P2PError
from p2p_cli.io.checkpoint import weights_hash
from p2p_cli.io.config import TrainConfig
from p2p_cli.io.rundir import RunDir, resolve_ref
from p2p_cli.losses.registry import DistillMethod, get_method
from p2p_cli.models.factory import load_model
from p2p_cli.models.protopnet import ProtoOutput, ProtoPNet
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.runtime.seeding import seed_everything, set_deterministic
from p2p_cli.training.objectives import ProtoPNetObjective, task_terms
from p2p_cli.training.trainer import Trainer
from p2p_cli.workflows.train_teacher import build_model, open_run, write_run_config


def method_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The config keys the loss registry reads (``kd_weight`` weights every KD baseline)."""
    return {"tau_train": cfg.tau_train, "fidelity": cfg.fidelity, "lambda_global": cfg.lambda_global,
            "lambda_ppc": cfg.lambda_ppc, "lambda_hint": cfg.kd_weight, "lambda_rkd": cfg.kd_weight,
            "lambda_kd": cfg.kd_weight, "kd_temperature": cfg.kd_temperature}


class DistillObjective:
    """Stage 1: transfer terms only; stage 2: ``L_ppnet`` (unless ``--no-ppnet-loss``) + transfer.

    The teacher runs under ``torch.inference_mode()`` in eval mode: no graph, no gradients.
    """

    def __init__(self, cfg: TrainConfig, teacher: ProtoPNet, method: DistillMethod, rt: Runtime,
                 d_student: int) -> None:
        self.cfg, self.teacher, self.method, self.rt = cfg, teacher, method, rt
        self.settings = method_settings(cfg)
        self.modules = method.make_modules(d_student, teacher.prototype_depth)

    def extra_modules(self) -> dict[str, nn.Module]:
        return dict(self.modules.items())

    def teacher_outputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode(), self.rt.autocast():
            out = self.teacher(images)
        return {**out._asdict(), "prototypes": self.teacher.prototypes.detach()}

    def loss(self, model: ProtoPNet, out: ProtoOutput, images: torch.Tensor, labels: torch.Tensor,
             stage: str) -> dict[str, torch.Tensor]:
        teacher = self.teacher_outputs(images)
        student = {**out._asdict(), "prototypes": model.prototypes}
        terms = self.method.compute(teacher, student, self.settings)
        total = terms["transfer"]
        if stage != "warm" and self.cfg.ppnet_loss:
            ppnet = task_terms(model, out, labels, self.cfg)
            total = total + ppnet.pop("total")
            terms.update(ppnet)
        terms["total"] = total
        return terms


def load_teacher(ref: str | None, workdir: Path, rt: Runtime) -> tuple[RunDir, ProtoPNet, dict[str, Any], str]:
    """Resolve, load and freeze the teacher; returns (run, model, metadata, weights hash)."""
    if not ref:
        raise P2PError("distill needs a teacher: --teacher REF (a run directory or a run name in the workdir)")
    run = resolve_ref(ref, workdir)
    model, meta = load_model(run.model_path)
    if str(meta.get("stage")) != "final":
        raise P2PError(f"teacher '{ref}' is not a trained run (stage {meta.get('stage')})")
    digest = weights_hash(model.state_dict())
    model.to(rt.device).eval()
    model.requires_grad_(False)
    if rt.channels_last:
        model.backbone.to(memory_format=torch.channels_last)
    return run, model, meta, digest


def check_compatible(teacher: ProtoPNet, student: ProtoPNet, cfg: TrainConfig, method: str, head: str,
                     rt: Runtime, teacher_classes: list[str], classes: list[str]) -> None:
    """Clear errors before any training: classes, prototype count and depth, feature grid."""
    if teacher_classes != classes:
        raise P2PError(f"the teacher was trained on {len(teacher_classes)} classes "
                       f"({', '.join(teacher_classes[:3])}, …) but the dataset has {len(classes)} "
                       f"({', '.join(classes[:3])}, …); distill on the teacher's dataset")
    if method != "proto2proto" and head == "init":
        return
    if teacher.num_prototypes != student.num_prototypes:
        if teacher.num_prototypes % len(classes):  # e.g. a pruned teacher: no prototypes_per_class fits
            raise P2PError(f"prototype count mismatch: teacher m = {teacher.num_prototypes} (not a multiple of "
                           f"its {len(classes)} classes, e.g. pruned), student m = {student.num_prototypes}; "
                           f"no student can match it — use --method hint|rkd|kd with --head init")
        raise P2PError(f"prototype count mismatch: teacher m = {teacher.num_prototypes}, student m = "
                       f"{student.num_prototypes} (set prototypes_per_class to match)")
    if method == "proto2proto":
        if teacher.prototype_depth != student.prototype_depth:
            raise P2PError(f"prototype depth mismatch: teacher D = {teacher.prototype_depth}, student D = "
                           f"{student.prototype_depth} (set prototype_depth to match)")
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
    teacher_run, teacher, teacher_meta, teacher_hash = load_teacher(cfg.teacher, workdir, rt)
    seed_everything(cfg.seed)
    data = build_datasets(cfg)
    student = build_model(cfg, len(data.classes), rt)
    # The baseline (--method none) is train-teacher on the small backbone: it never sees the
    # teacher's head; --head applies to the distillation methods.
    head = "init" if cfg.method == "none" else cfg.head
    if teacher.arch != student.arch:
        raise P2PError(f"teacher '{teacher_run.name}' is a {teacher.arch} but the student would be a {student.arch}; "
                       f"pass --arch {teacher.arch}")
    if cfg.method != "none":  # a tree student takes the teacher tree's shape (index-aligned prototypes)
        student.align_to(teacher, copy_head=False)
    check_compatible(teacher, student, cfg, cfg.method, head, rt, list(teacher_meta.get("class_names", [])),
                     data.classes)
    if head in ("copy", "frozen"):  # ProtoPNet: the last layer; ProtoTree: the leaves
        student.align_to(teacher, copy_head=True)
    head_frozen = head == "frozen"
    if head_frozen:
        for p in student.parameter_groups().get("last_layer", []):
            p.requires_grad_(False)
    if cfg.method == "none":
        objective: Any = ProtoPNetObjective(cfg)
    else:
        objective = DistillObjective(cfg, teacher, method, rt, student.prototype_depth)
    teacher_info = {"name": teacher_run.name, "path": str(teacher_run.path.resolve()), "weights_hash": teacher_hash,
                    "backbone": teacher.config.backbone}
    run = open_run(workdir, name, rt, overwrite=overwrite, resume=resume)
    if rt.is_main and not resume:
        write_run_config(run, cfg, "distill", {"teacher_run": teacher_info})
    reporter.info(f"[bold]distill[/] {name}: {teacher.config.backbone} ({teacher_run.name}) → {cfg.backbone}, "
                  f"method {cfg.method}, head {head}, fidelity {cfg.fidelity}; {student.num_prototypes} "
                  f"prototypes × D={student.prototype_depth}, device {rt.device}")
    trainer = Trainer(cfg, student, objective, data, rt, run, reporter, head_frozen=head_frozen,
                      metadata={"role": "student", "teacher": teacher_info, "method": cfg.method,
                                "head": head, "fidelity": cfg.fidelity})
    state = trainer.fit(resume=resume)
    if weights_hash(teacher.state_dict()) != teacher_hash:
        raise RuntimeError("the teacher's weights changed during distillation")  # a bug, never a user error
    last = state.records[-1] if state.records else {}
    return run, {"test_acc": last.get("test_acc"), "seconds": time.perf_counter() - t0}
