"""What several commands share besides their options: flags that take several values, the ``--json`` file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
import typer
from typer.core import TyperCommand

from p2p_cli.cli.options import (  # noqa: F401  re-export: remove after merge
    DeviceOpt,
    QuietOpt,
    SeedOpt,
    VerboseOpt,
    WorkdirOpt,
)
from p2p_cli.io.atomic import atomic_write_text
from p2p_cli.io.config import load_config  # noqa: F401  re-export: remove after merge
from p2p_cli.runtime.reporter import Reporter


def reporter(verbose: bool, quiet: bool, rank: int = 0) -> Reporter:  # re-export: remove after merge
    """The old helper for commands not yet on :class:`~p2p_cli.cli.options.Common` (use ``common.reporter()``)."""
    return Reporter(enabled=not quiet and rank == 0, verbose=verbose)


def _is_option(token: str) -> bool:
    """An option name (``--x``, ``-x``), not a value such as ``-1`` or ``-inf``."""
    if not token.startswith("-") or token == "-":
        return False
    try:
        float(token)
        return False
    except ValueError:
        return True


def expand_variadic(args: list[str], flags: tuple[str, ...]) -> list[str]:
    """``--metrics acc aap --tau 0.1 inf`` → ``--metrics acc --metrics aap --tau 0.1 --tau inf``.

    Click options take one value each; the documented syntax lists several after one flag. Values
    run until the next option (a token starting with ``-`` that is not a number) or ``--``.
    """
    out: list[str] = []
    current: str | None = None
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            out.extend(args[i:])
            break
        if _is_option(tok):
            name = tok.split("=", 1)[0]
            current = name if name in flags and "=" not in tok else None
            out.append(tok)
            if current is not None and i + 1 < len(args):
                out.append(args[i + 1])
                i += 1
        elif current is not None:
            out.extend([current, tok])
        else:
            out.append(tok)
        i += 1
    return out


def variadic_command(*flags: str) -> type[TyperCommand]:
    """A Typer command class whose ``flags`` (list options) take several values after one flag."""

    class VariadicCommand(TyperCommand):
        def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
            return super().parse_args(ctx, expand_variadic(list(args), flags))

    return VariadicCommand


def write_json_report(path: Path | None, report: dict[str, Any], quiet: bool) -> None:
    """Write ``report`` to ``--json PATH`` (atomically) — before the tables are printed, so the file
    exists even when stdout is a pipe that closes early (``p2p evaluate … | head``)."""
    if path is None:
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
