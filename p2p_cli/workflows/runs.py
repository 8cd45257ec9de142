"""What the commands that write a run share: open its directory, record its config and its
environment, and build the training-time adversary a config asks for."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import p2p_cli
from p2p_cli.io.atomic import atomic_write_json, atomic_write_yaml
from p2p_cli.io.config import SCHEMA_VERSION, TrainConfig
from p2p_cli.io.rundir import RunDir, prepare_run
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.distributed import barrier
from p2p_cli.runtime.environment import ENVIRONMENT_JSON, environment_record
from p2p_cli.training.trainer import Adversary


def write_run_config(run: RunDir, cfg: TrainConfig, command: str, extra: dict[str, Any] | None = None) -> None:
    """``config.yaml``: schema and p2p versions, the command and its argv, ``extra`` bookkeeping
    keys (teacher_run, pruning, …) and every config key."""
    data = {"schema_version": SCHEMA_VERSION, "p2p_version": p2p_cli.__version__, "command": command,
            "argv": sys.argv[1:], **(extra or {}), **cfg.to_dict()}
    atomic_write_yaml(run.config_path, data)


def write_environment(run: RunDir, rt: Runtime) -> None:
    """``environment.json``: versions, device, CPU features, threads, world size, command line."""
    atomic_write_json(run.path / ENVIRONMENT_JSON, environment_record(rt, sys.argv))


def open_run(workdir: Path, name: str, rt: Runtime, *, overwrite: bool, resume: bool) -> RunDir:
    """Rank 0 prepares the run directory; the others wait and reuse it."""
    run = RunDir(Path(workdir) / name)
    if rt.is_main:
        run = prepare_run(Path(workdir), name, overwrite=overwrite, resume=resume)
    barrier(rt)
    return run


def training_adversary(cfg: TrainConfig, rt: Runtime) -> Adversary | None:
    """The batch replacement of ``cfg.adversarial``: fast FGSM training (Wong et al. 2020;
    Hoffmann et al. 2021, App. F.1) — random start, one step of ``adv_step``, radius ``adv_eps``."""
    if cfg.adversarial == "none":
        return None
    from p2p_cli.attacks.fgsm import fgsm_examples

    def fgsm(model, images, labels):  # noqa: ANN001, ANN202
        return fgsm_examples(model, images, labels, rt, eps=cfg.adv_eps, step=cfg.adv_step)

    return fgsm
