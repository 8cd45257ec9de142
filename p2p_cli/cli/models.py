"""`p2p models`: the backbone registry and the trained runs in the workdir."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from p2p_cli.cli.options import Common, only, with_options


@with_options
def models_cmd(
    timm_filter: Annotated[str | None, typer.Option("--timm", help="also list timm models matching a pattern, "
                                                    "e.g. 'efficientnet*' (any timm CNN can be a backbone)")] = None,
    *,
    common: Annotated[Common, only("workdir", "verbose", "quiet")],
) -> None:
    """List the registered backbones and the trained models in WORKDIR.

    Examples:
      p2p models
      p2p models --workdir runs --timm 'efficientnet*'
    """
    from p2p_cli import api

    listing = api.list_models(workdir=common.workdir, timm=timm_filter)
    console = Console()
    table = Table(title="backbones", title_justify="left")
    for col in ("name", "timm model", "family", "D", "add-on", "stride"):
        table.add_column(col)
    for spec in listing.backbones:
        table.add_row(spec.name, spec.timm_id, spec.family, str(spec.prototype_depth), spec.add_on,
                      str(spec.feature_stride))
    console.print(table)
    if listing.timm_models is not None:
        names = listing.timm_models
        console.print(f"timm models matching '{timm_filter}' ({len(names)}): " + ", ".join(names))
    if not listing.runs:
        console.print(f"no trained models in {common.workdir}")
        return
    rtable = Table(title=f"trained models in {common.workdir}", title_justify="left")
    for col in ("run", "arch", "backbone", "prototypes", "classes", "test acc", "teacher", "method"):
        rtable.add_column(col)
    for name, meta in listing.runs:
        teacher = meta.get("teacher")
        acc = meta.get("test_acc")
        rtable.add_row(name, str(meta.get("arch", "?")), str(meta.get("model_config", {}).get("backbone", "?")),
                       str(meta.get("num_prototypes", "?")), str(len(meta.get("class_names", []))),
                       f"{acc:.3f}" if isinstance(acc, float) else "–",
                       str(teacher.get("name")) if isinstance(teacher, dict) else "–", str(meta.get("method", "–")))
    console.print(rtable)
