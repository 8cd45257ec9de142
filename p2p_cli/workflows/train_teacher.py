"""train-teacher: build the data, the model and the trainer from a config, and run it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from p2p_cli.data.index import MIN_CLASSES
from p2p_cli.data.loaders import build_datasets
from p2p_cli.errors import P2PError
from p2p_cli.io.config import TrainConfig, build_config, load_config
from p2p_cli.io.rundir import RunDir
from p2p_cli.models.factory import build_model
from p2p_cli.runtime.device import Runtime, resolve_device
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.runtime.seeding import seed_everything, set_deterministic
from p2p_cli.training.objectives import TaskObjective
from p2p_cli.training.trainer import Trainer
from p2p_cli.workflows.runs import open_run, training_adversary, write_environment, write_run_config
from p2p_cli.workflows.train_defaults import default_schedule, loss_weights, precision_name, with_estimate


def teacher_config(path: str | Path | None, overrides: dict[str, Any], device: str
                   ) -> tuple[TrainConfig, str | None]:
    """(the config, the name of the built-in schedule or None): defaults ← the YAML file ← flags;
    without a file, defaults ← the built-in schedule for ``device`` ← flags."""
    if path:
        return load_config(path, overrides), None
    label, values = default_schedule(resolve_device(device).type, overrides.get("backbone"))
    return build_config(values, overrides, source="built-in schedule"), label


def train_teacher(cfg: TrainConfig, *, workdir: Path, name: str, rt: Runtime, reporter: Reporter,
                  overwrite: bool = False, resume: bool = False, schedule: str | None = None
                  ) -> tuple[RunDir, dict[str, Any]]:
    """Train a model of ``cfg.arch`` (a teacher, or a baseline student) into ``workdir/name``;
    ``schedule`` (the built-in schedule's name) adds the line with the estimated time."""
    set_deterministic(cfg.deterministic)
    seed_everything(cfg.seed)
    t0 = time.perf_counter()
    data = build_datasets(cfg)
    if len(data.classes) < MIN_CLASSES:
        raise P2PError(f"the dataset has {len(data.classes)} class(es); training needs at least {MIN_CLASSES}")
    model = build_model(cfg, len(data.classes), rt)
    with open_run(workdir, name, rt, overwrite=overwrite, resume=resume, config=cfg) as opened:
        run = opened.run
        if rt.is_main and not resume:
            write_run_config(run, cfg, "train-teacher")
            write_environment(run, rt)
        reporter.info(f"[bold]train-teacher[/] {name}: {cfg.arch} {cfg.backbone}, {model.num_prototypes} prototypes "
                      f"× D={model.prototype_depth}, {len(data.classes)} classes, {len(data.index.train)} train / "
                      f"{len(data.index.test)} test images at {cfg.image_size} px, device {rt.device}, "
                      f"precision {precision_name(rt)}")
        if schedule is not None:
            reporter = with_estimate(reporter, cfg, schedule, data)
        reporter.loss_weights = loss_weights(cfg)
        trainer = Trainer(cfg, model, TaskObjective(cfg), data, rt, run, reporter,
                          metadata={"role": "teacher-or-baseline"}, adversary=training_adversary(cfg, rt))
        state = trainer.fit(resume=resume)
    last = state.records[-1] if state.records else {}
    return opened.final, {"test_acc": last.get("test_acc"), "seconds": time.perf_counter() - t0, "model": model}
