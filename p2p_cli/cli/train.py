"""`p2p train-teacher`: train a ProtoPNet (a teacher, or a baseline student)."""

from pathlib import Path
from typing import Annotated

import typer

from p2p_cli.cli.common import (
    DISTILL_KEYS,
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
from p2p_cli.workflows.train_teacher import train_teacher


@with_config_flags(exclude=DISTILL_KEYS)
def train_teacher_cmd(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config; flags override its keys")] = None,
    name: Annotated[str | None, typer.Option("--name", help="run name (default: the backbone name)")] = None,
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
    """Train a ProtoPNet: warm → joint → push → last layer (SPEC §3).

    A teacher is this command with a big backbone; a baseline student the same with a small one.
    The run is written to WORKDIR/NAME (config.yaml, model.safetensors, prototypes.json, metrics.jsonl).
    """
    overrides["seed"] = seed
    cfg = load_config(config, overrides)
    rt = make_runtime(device, cfg.precision, cfg.channels_last)
    rep = reporter(verbose, quiet, rt.rank)
    rep.debug("resolved config:\n" + "\n".join(f"  {k}: {v}" for k, v in cfg.to_dict().items()))
    run, result = train_teacher(cfg, workdir=workdir, name=name or cfg.backbone, rt=rt, reporter=rep,
                                overwrite=overwrite, resume=resume)
    if rt.is_main:
        acc = result["test_acc"]
        typer.echo(f"{run.path}: test accuracy {acc:.3f} ({result['seconds']:.0f} s)")
