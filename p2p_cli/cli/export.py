"""`p2p export`: a run's model as ONNX or TorchScript, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from p2p_cli.cli.options import Common, only, with_options


@with_options
def export_cmd(
    model: Annotated[str, typer.Argument(help="model REF: a run directory, a run name in the workdir, or "
                                         "hf-hub:ORG/NAME(@REV)", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", "-f", help="file format", metavar="[onnx|torchscript]")] = "onnx",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="output file (default: RUN/model.onnx or "
                                             "RUN/model.torchscript.pt)")] = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="run the export next to PyTorch on sample "
                                        "inputs and print the largest differences")] = True,
    *,
    common: Annotated[Common, only("workdir", "verbose", "quiet")],
) -> None:
    """Export a model that maps normalised images (B, 3, S, S) to logits (B, K) and per-prototype min
    distances (B, m). Preprocessing and a runnable example: docs/deploy.md.

    Examples:
      p2p export teacher --format onnx
      p2p export runs/student --format torchscript --out student.pt
    """
    from p2p_cli import api

    result = api.export(model, format=fmt, out=out, check=check, workdir=common.workdir, quiet=common.quiet,
                        verbose=common.verbose)
    s = result.image_size
    typer.echo(f"wrote {result.path} ({result.format}): images (B, 3, {s}, {s}) normalised with the ImageNet "
               f"mean/std → logits (B, {result.num_classes}), min_distances (B, {result.num_prototypes})")
    if result.note:
        typer.echo(f"warning: {result.note}", err=True)
    c = result.check
    if c is not None:
        verdict = "ok" if c.ok else "MISMATCH"
        typer.echo(f"check ({c.runtime}, {c.images} images): max |Δ logits| = {c.max_abs_logits:.3g}, "
                   f"max |Δ min_distances| = {c.max_abs_min_distances:.3g}: {verdict}")
        if not c.ok:
            raise typer.Exit(1)
