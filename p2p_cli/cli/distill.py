"""`p2p distill`: train a student from a trained teacher (Proto2Proto or a KD baseline)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from p2p_cli.cli.options import Common, ConfigFileOpt, OverwriteOpt, ResumeOpt, config_flags, with_options


@with_options
def distill_cmd(
    teacher: Annotated[str | None, typer.Option("--teacher", "-t", help="teacher run: a path, or a run name in "
                                                "the workdir")] = None,
    student: Annotated[str | None, typer.Option("--student", "-s", help="student backbone from the registry "
                                                "(default: the config's backbone, else resnet50)")] = None,
    config: ConfigFileOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="run name (default: STUDENT-METHOD)")] = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    *,
    common: Common,
    overrides: Annotated[dict[str, Any], config_flags(exclude=("backbone", "teacher"))],
) -> None:
    """Distill a trained teacher into a student ProtoPNet (Keswani et al., CVPR 2022).

    Proto2Proto (default) minimises L_ppnet + λ_global·L_global + λ_ppc·L_ppc (Eq. 6, with L_global Eq. 5
    and L_ppc Eq. 4); stage 1 (the warm epochs) trains the transfer losses only. --method none trains the
    baseline student; hint, rkd and kd are the knowledge-distillation baselines. The student takes every
    setting it does not choose itself (data, image size, feature grid, prototypes, schedule) from the
    teacher's run, unless --config or a flag says otherwise.

    Examples:
      p2p distill --teacher resnet50 --student resnet18
      p2p distill --teacher resnet50 --student resnet18 --method none
      p2p distill -c examples/cub-resnet50-to-resnet18.yaml --name cub-resnet18
    """
    from p2p_cli import api

    outcome = api.distill(config, teacher=teacher, student=student, name=name, workdir=common.workdir,
                          device=common.device, overwrite=overwrite, resume=resume, quiet=common.quiet,
                          verbose=common.verbose, **{**overrides, "seed": common.seed})
    if outcome.is_main:
        typer.echo(f"{outcome.path}: test accuracy {outcome.test_acc:.3f} ({outcome.seconds:.0f} s)")
