"""`p2p distill`: train a student from a trained teacher (Proto2Proto or a KD baseline)."""

from pathlib import Path
from typing import Annotated

import typer

from p2p_cli.cli.common import (
    DeviceOpt,
    QuietOpt,
    SeedOpt,
    VerboseOpt,
    WorkdirOpt,
    load_config,
    reporter,
    with_config_flags,
)
from p2p_cli.runtime.device import make_runtime
from p2p_cli.workflows.distill import distill


@with_config_flags(exclude=("backbone", "teacher"))
def distill_cmd(
    teacher: Annotated[str | None, typer.Option("--teacher", "-t", help="teacher run: a path, or a run name in "
                                                "the workdir")] = None,
    student: Annotated[str | None, typer.Option("--student", "-s", help="student backbone from the registry "
                                                "(default: the config's backbone)")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config; flags override its keys")] = None,
    name: Annotated[str | None, typer.Option("--name", help="run name (default: STUDENT-METHOD)")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing run of that name")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted run from its snapshot")] = False,
    workdir: WorkdirOpt = Path("runs"),
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
    *,
    overrides: dict,
) -> None:
    """Distill a trained teacher into a student ProtoPNet (SPEC §5).

    Proto2Proto (default): L_ppnet + λ_global·L_global + λ_ppc·L_ppc; stage 1 (warm epochs) trains the
    transfer losses only. --method none trains the baseline student; hint, rkd and kd are the KD baselines.
    """
    overrides.update(seed=seed, teacher=teacher, backbone=student)
    cfg = load_config(config, overrides)
    rt = make_runtime(device, cfg.precision, cfg.channels_last)
    rep = reporter(verbose, quiet, rt.rank)
    rep.debug("resolved config:\n" + "\n".join(f"  {k}: {v}" for k, v in cfg.to_dict().items()))
    run, result = distill(cfg, workdir=workdir, name=name or f"{cfg.backbone}-{cfg.method}", rt=rt, reporter=rep,
                          overwrite=overwrite, resume=resume)
    if rt.is_main:
        typer.echo(f"{run.path}: test accuracy {result['test_acc']:.3f} ({result['seconds']:.0f} s)")
