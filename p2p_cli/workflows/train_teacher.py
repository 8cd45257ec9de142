"""train-teacher: build the data, the model and the trainer from a config, and run it."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import p2p_cli
from p2p_cli.data.loaders import build_datasets
from p2p_cli.errors import P2PError
from p2p_cli.io.atomic import atomic_write_yaml
from p2p_cli.io.config import SCHEMA_VERSION, TrainConfig
from p2p_cli.io.rundir import RunDir, prepare_run
from p2p_cli.models.factory import build_model
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.distributed import barrier
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.runtime.seeding import seed_everything, set_deterministic
from p2p_cli.training.objectives import ProtoPNetObjective
from p2p_cli.training.trainer import Trainer


def write_run_config(run: RunDir, cfg: TrainConfig, command: str, extra: dict[str, Any] | None = None) -> None:
    data = {"schema_version": SCHEMA_VERSION, "p2p_version": p2p_cli.__version__, "command": command,
            "argv": sys.argv[1:], **(extra or {}), **cfg.to_dict()}
    atomic_write_yaml(run.config_path, data)


def open_run(workdir: Path, name: str, rt: Runtime, *, overwrite: bool, resume: bool) -> RunDir:
    """Rank 0 prepares the run directory; the others wait and reuse it."""
    run = RunDir(Path(workdir) / name)
    if rt.is_main:
        run = prepare_run(Path(workdir), name, overwrite=overwrite, resume=resume)
    barrier(rt)
    return run


def train_teacher(cfg: TrainConfig, *, workdir: Path, name: str, rt: Runtime, reporter: Reporter,
                  overwrite: bool = False, resume: bool = False) -> tuple[RunDir, dict[str, Any]]:
    """Train a ProtoPNet (a teacher, or a baseline student) into ``workdir/name``."""
    set_deterministic(cfg.deterministic)
    seed_everything(cfg.seed)
    t0 = time.perf_counter()
    data = build_datasets(cfg)
    if len(data.classes) < 2:
        raise P2PError("the dataset has fewer than 2 classes")
    model = build_model(cfg, len(data.classes), rt)
    run = open_run(workdir, name, rt, overwrite=overwrite, resume=resume)
    if rt.is_main and not resume:
        write_run_config(run, cfg, "train-teacher")
    reporter.info(f"[bold]train-teacher[/] {name}: {cfg.arch} {cfg.backbone}, {model.num_prototypes} prototypes × "
                  f"D={model.prototype_depth}, {len(data.classes)} classes, {len(data.index.train)} train / "
                  f"{len(data.index.test)} test images at {cfg.image_size} px, device {rt.device}, "
                  f"precision {rt.amp_dtype or 'fp32'}")
    trainer = Trainer(cfg, model, ProtoPNetObjective(cfg), data, rt, run, reporter,
                      metadata={"role": "teacher-or-baseline"})
    state = trainer.fit(resume=resume)
    last = state.records[-1] if state.records else {}
    return run, {"test_acc": last.get("test_acc"), "seconds": time.perf_counter() - t0, "model": model}
