"""What several commands print: the ``--json`` report (a file, or ``-`` for stdout)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from p2p_cli.io.atomic import atomic_write_text


def to_stdout(path: Path | str | None) -> bool:
    """Whether ``--json PATH`` asks for stdout (``-``): then stdout carries the JSON and nothing else."""
    return path is not None and str(path) == "-"


def write_json_report(path: Path | None, report: dict[str, Any], quiet: bool) -> None:
    """Write ``report`` to ``--json PATH`` (atomically) — before the tables are printed, so the file
    exists even when stdout is a pipe that closes early (``p2p evaluate … | head``); ``-`` writes it
    to stdout (the caller then prints its tables to stderr)."""
    if path is None:
        return
    if to_stdout(path):
        typer.echo(json.dumps(json_safe(report), indent=2, allow_nan=False))
        return
    atomic_write_text(path, json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    if not quiet:
        typer.echo(f"wrote {path}", err=True)


def json_safe(obj: Any) -> Any:
    """NaN → null and ±inf → "inf"/"-inf", recursively, so ``json.dumps(allow_nan=False)`` accepts it."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else ("inf" if obj == math.inf else ("-inf" if obj == -math.inf else obj))
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
