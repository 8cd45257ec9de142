"""`p2p train-teacher`: train a ProtoPNet (a teacher, or a baseline student)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from p2p_cli.cli.options import (
    DISTILL_KEYS,
    Common,
    ConfigFileOpt,
    OverwriteOpt,
    ResumeOpt,
    config_flags,
    with_options,
)


@with_options
def train_teacher_cmd(
    config: ConfigFileOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="run name (default: the backbone name)")] = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    *,
    common: Common,
    overrides: Annotated[dict[str, Any], config_flags(exclude=DISTILL_KEYS)],
) -> None:
    """Train a ProtoPNet: warm-up, joint training, prototype push, last layer (Chen et al., NeurIPS 2019).

    A teacher is this command with a big backbone; a baseline student the same with a small one.
    The run is written to WORKDIR/NAME (config.yaml, model.safetensors, prototypes.json, metrics.jsonl).
    Without --config the built-in synthetic data is used with a schedule sized for the machine: a
    CPU-sized one when there is no GPU (minutes on two cores), a paper-like one on a GPU; one line says
    which, with the time estimated from the first steps. The defaults listed below are the paper-like
    ones; the paper's settings for CUB-200-2011 and Stanford Cars are in examples/.

    Examples:
      p2p train-teacher --backbone resnet50
      p2p train-teacher --backbone resnet34 -c examples/synthetic-fast.yaml
      p2p train-teacher -c examples/cub-resnet50-teacher.yaml --name cub-resnet50
    """
    from p2p_cli import api

    outcome = api.train_teacher(config, name=name, workdir=common.workdir, device=common.device, overwrite=overwrite,
                                resume=resume, quiet=common.quiet, verbose=common.verbose,
                                **{**overrides, "seed": common.seed})
    if outcome.is_main:
        typer.echo(f"{outcome.path}: test accuracy {outcome.test_acc:.3f} ({outcome.seconds:.0f} s)")
