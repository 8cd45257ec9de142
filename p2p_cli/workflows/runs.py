"""What the commands that write a run share: open its directory, record its config and its
environment, and build the training-time adversary a config asks for."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import p2p_cli
from p2p_cli.errors import P2PError
from p2p_cli.io.atomic import atomic_write_json, atomic_write_yaml
from p2p_cli.io.config import RESUME_FREE_KEYS, SCHEMA_VERSION, TrainConfig, config_from_dict, first_difference
from p2p_cli.io.rundir import RunDir, RunWriter, open_run_dir, staging_path
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


@dataclass(frozen=True)
class OpenRun:
    """A run being written: ``run`` is where to write now, ``final`` where the run ends up (the
    same folder, except for ``overwrite`` of an existing run: see :func:`p2p_cli.io.rundir.open_run_dir`)."""

    run: RunDir
    final: RunDir


def check_resume_config(run: RunDir, cfg: TrainConfig) -> None:
    """A one-line P2PError naming the first key where ``cfg`` differs from the config ``run`` was
    started with (keys of :data:`~p2p_cli.io.config.RESUME_FREE_KEYS` may differ): a resumed run
    is the run it continues, or its ``config.yaml`` would lie."""
    if not run.config_path.is_file():
        return
    recorded = config_from_dict(run.read_config(), source=str(run.config_path))
    diff = first_difference(recorded, cfg, ignore=RESUME_FREE_KEYS)
    if diff is not None:
        key, old, new = diff
        raise P2PError(f"--resume: config key '{key}' is {new!r} but run '{run.path}' was started with {old!r}; "
                       "resume with the run's settings (its config.yaml) or start a new run")


@contextmanager
def open_run(workdir: Path, name: str, rt: Runtime, *, overwrite: bool, resume: bool,
             config: TrainConfig | None = None) -> Iterator[OpenRun]:
    """Rank 0 locks and prepares the run directory; the others wait and write beside it. With
    ``resume`` and a ``config``, the config must be the run's (:func:`check_resume_config`).

    The block writes the run; when it ends normally a staged run is swapped into place, when it
    raises (or is interrupted) the staged run is deleted and the old run stays. The lock is
    released either way.
    """
    writer: RunWriter | None = None
    if rt.is_main:
        writer = open_run_dir(Path(workdir), name, overwrite=overwrite, resume=resume)
        if resume and config is not None:
            try:
                check_resume_config(writer.run, config)
            except BaseException:
                writer.release()
                raise
    barrier(rt)
    final = RunDir(Path(workdir) / name)
    stage = staging_path(final.path)
    run = writer.run if writer is not None else (RunDir(stage) if stage.is_dir() else final)
    try:
        yield OpenRun(run, final)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    barrier(rt)
    if writer is not None:
        writer.commit()


def training_adversary(cfg: TrainConfig, rt: Runtime) -> Adversary | None:
    """The batch replacement of ``cfg.adversarial``: fast FGSM training (Wong et al. 2020;
    Hoffmann et al. 2021, App. F.1) — random start, one step of ``adv_step``, radius ``adv_eps``."""
    if cfg.adversarial == "none":
        return None
    from p2p_cli.attacks.fgsm import fgsm_examples

    def fgsm(model, images, labels):  # noqa: ANN001, ANN202
        return fgsm_examples(model, images, labels, rt, eps=cfg.adv_eps, step=cfg.adv_step)

    return fgsm
