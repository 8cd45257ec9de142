"""`p2p data`: synthesize the built-in dataset, check a dataset root."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from p2p_cli.cli.command import P2PCommand, P2PGroup
from p2p_cli.cli.data_prepare import prepare_cmd
from p2p_cli.cli.options import Common, only, with_options
from p2p_cli.io.config import DATASET_KINDS

app = typer.Typer(help="Dataset tools: synthesize the built-in data, check a dataset root.", no_args_is_help=True,
                  cls=P2PGroup)
QuietOnly = Annotated[Common, only("quiet")]


@app.command("synthesize", cls=P2PCommand)
@with_options
def synthesize_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder to write (CUB-200-2011 layout)")],
    preset: Annotated[str, typer.Option(help="difficulty", metavar="easy|hard")] = "easy",
    classes: Annotated[int, typer.Option("--classes", min=2, help="number of classes")] = 10,
    train_per_class: Annotated[int, typer.Option(min=1, help="training images per class")] = 100,
    test_per_class: Annotated[int, typer.Option(min=1, help="test images per class")] = 40,
    image_size: Annotated[int, typer.Option(help="image side in pixels, 48-1024")] = 112,
    seed: Annotated[int, typer.Option(help="generator seed")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing folder")] = False,
    *,
    common: QuietOnly,
) -> None:
    """Write the built-in synthetic dataset (deterministic) with ground-truth parts and boxes.

    Examples:
      p2p data synthesize --out data/synthetic
      p2p data synthesize --out data/hard --preset hard --classes 20
    """
    from p2p_cli import api

    path = api.synthesize(out, preset=preset, classes=classes, train_per_class=train_per_class,
                          test_per_class=test_per_class, image_size=image_size, seed=seed, overwrite=overwrite)
    typer.echo(f"{path}: {classes} classes × ({train_per_class} train + {test_per_class} test) images, "
               f"{image_size} px, preset {preset}")


@app.command("check", cls=P2PCommand)
@with_options
def check_cmd(
    dataset: Annotated[str, typer.Option("--dataset", help="dataset kind", metavar="|".join(DATASET_KINDS))],
    data_root: Annotated[Path | None, typer.Option("--data-root", help="dataset root")] = None,
    *,
    common: QuietOnly,
) -> None:
    """Validate a dataset root: layout, unreadable images, empty classes, train/test duplicates.

    Exits with status 1 when a check fails.

    Examples:
      p2p data check --dataset cub --data-root ~/data/CUB_200_2011
      p2p data check --dataset folder --data-root data/flowers
    """
    from p2p_cli import api

    rows = api.check_data(dataset, data_root)
    table = Table(title=f"{dataset}: {data_root or '(built-in synthetic)'}", title_justify="left")
    for col in ("check", "status", "detail"):
        table.add_column(col)
    colour = {"ok": "green", "warn": "yellow", "error": "red"}
    for row in rows:
        table.add_row(row.check, f"[{colour[row.status]}]{row.status}[/]", row.detail)
    Console().print(table)
    if any(r.status == "error" for r in rows):
        raise typer.Exit(1)


app.command("prepare", cls=P2PCommand)(prepare_cmd)
