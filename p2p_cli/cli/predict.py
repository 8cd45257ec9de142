"""`p2p predict`: classify many images, with the prototypes behind each prediction."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from p2p_cli.cli.options import Common, RunData, only, with_options
from p2p_cli.errors import P2PError


@with_options
def predict_cmd(
    images: Annotated[list[Path], typer.Argument(help="image files and/or folders (searched recursively)",
                                                 show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", help="model REF: a run directory, a run name in the "
                                       "workdir, or hf-hub:ORG/NAME(@REV)")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="prototypes reported per image")] = 5,
    json_path: Annotated[str | None, typer.Option("--json", help="write the rows as JSON to FILE (- = stdout)")
                         ] = None,
    csv_path: Annotated[str | None, typer.Option("--csv", help="write the rows as CSV to FILE (- = stdout)")] = None,
    *,
    data: Annotated[RunData, only("batch_size", "precision")],
    common: Annotated[Common, only("workdir", "device", "verbose", "quiet")],
) -> None:
    """Predict the class of every image, with the top-k prototypes by similarity (grid cell and its box in
    the image's pixels). Unreadable files are reported on stderr and skipped.

    Examples:
      p2p predict --model teacher photos/
      p2p predict --model teacher a.jpg b.jpg --top-k 3 --json -
      p2p predict --model hf-hub:org/cub-protopnet photos/ --csv predictions.csv
    """
    from p2p_cli import api
    from p2p_cli.io.atomic import atomic_write_text
    from p2p_cli.workflows.predict import csv_text, json_text

    if json_path == "-" and csv_path == "-":
        raise P2PError("--json - and --csv - both want stdout; write one of them to a file")
    quiet = common.quiet
    result = api.predict(images, model=model, top_k=top_k, batch_size=data.batch_size or 32,
                         precision=data.precision or "auto",
                         on_skip=lambda s: typer.echo(f"skipped: {s.reason}", err=True), workdir=common.workdir,
                         device=common.device, quiet=quiet, verbose=common.verbose)
    if not result.predictions:
        raise P2PError(f"none of the {len(result.skipped)} images could be read")
    for path, text in ((json_path, json_text(result) if json_path else ""),
                       (csv_path, csv_text(result, top_k) if csv_path else "")):
        if path == "-":
            sys.stdout.write(text)
        elif path:
            atomic_write_text(path, text)
            if not quiet:
                typer.echo(f"wrote {path}", err=True)
    if "-" not in (json_path, csv_path):
        _print_table(result)
    if result.skipped:
        names = ", ".join(s.image for s in result.skipped)
        typer.echo(f"{len(result.predictions)} images predicted, {len(result.skipped)} skipped: {names}", err=True)


def _print_table(result) -> None:  # noqa: ANN001
    table = Table(title=f"{result.model}: {len(result.predictions)} images", title_justify="left")
    for col in ("image", "class", "probability", "top prototype", "similarity", "cell (h, w)", "box"):
        table.add_column(col, justify="left" if col in ("image", "class") else "right")
    for p in result.predictions:
        top = p.prototypes[0]
        table.add_row(p.image, p.class_name, f"{p.probability:.3f}", str(top["prototype"]),
                      f"{top['similarity']:.3f}", f"{top['h']}, {top['w']}", " ".join(map(str, top["box"])))
    Console(width=200 if not sys.stdout.isatty() else None).print(table)
