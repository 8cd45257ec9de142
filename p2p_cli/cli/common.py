"""Shared CLI plumbing: common options, config flags generated from the schema, error exits."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperCommand

from p2p_cli.io.atomic import atomic_write_text
from p2p_cli.io.config import KEYS, TrainConfig, build_config, read_config_file
from p2p_cli.runtime.reporter import Reporter

# The flag panels shown by --help, keyed by the first config key of each group.
_PANELS = {"dataset": "Data", "backbone": "Model", "epochs": "Schedule", "precision": "Runtime",
           "teacher": "Distillation"}
DISTILL_KEYS = ("teacher", "method", "lambda_global", "lambda_ppc", "tau_train", "ppnet_loss", "head", "fidelity",
                "kd_weight", "kd_temperature")


def _panel_of() -> dict[str, str]:
    out, panel = {}, "Data"
    for f in dataclasses.fields(TrainConfig):
        panel = _PANELS.get(f.name, panel)
        out[f.name] = panel
    return out


PANEL_OF = _panel_of()

WorkdirOpt = Annotated[Path, typer.Option("--workdir", help="where runs live", rich_help_panel="Common")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto|cpu|cuda|cuda:N|mps", rich_help_panel="Common")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="print more", rich_help_panel="Common")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="print only results and errors",
                                        rich_help_panel="Common")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="random seed", rich_help_panel="Common")]


def reporter(verbose: bool, quiet: bool, rank: int = 0) -> Reporter:
    return Reporter(enabled=not quiet and rank == 0, verbose=verbose)


def config_flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def with_config_flags(exclude: tuple[str, ...] = ()):
    """Decorator: add one ``--flag`` per config key (except ``exclude``) to a Typer command.

    The wrapped function receives the given flags in a dict ``overrides`` (``None`` = not given).
    """

    def decorate(func):
        # Commands using this decorator must not use `from __future__ import annotations`:
        # Typer needs the annotation objects (with their typer.Option metadata).
        sig = inspect.signature(func, eval_str=True)
        params = [p for p in sig.parameters.values() if p.name != "overrides"]
        keys = [k for k in KEYS if k not in exclude and k != "seed"]
        for key in keys:
            fld = KEYS[key]
            help_text = fld.metadata["help"]
            choices = fld.metadata.get("choices")
            panel = PANEL_OF[key]
            default = fld.default
            if default is not None and default is not dataclasses.MISSING:
                help_text += f" (default: {default})"
            if isinstance(default, bool):
                opt = typer.Option(None, f"{config_flag(key)}/--no-{key.replace('_', '-')}", help=help_text,
                                   rich_help_panel=panel, show_default=False)
                annotation: Any = bool | None
            else:
                metavar = "|".join(choices) if choices else _metavar(key)
                opt = typer.Option(None, config_flag(key), help=help_text, rich_help_panel=panel,
                                   metavar=metavar, show_default=False)
                annotation = str | None
            params.append(inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=opt,
                                            annotation=annotation))

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            overrides = {k: kwargs.pop(k) for k in keys}
            return func(*args, overrides=overrides, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


def _metavar(key: str) -> str:
    name = str(KEYS[key].type)
    if "int" in name:
        return "INT"
    if "float" in name:
        return "FLOAT"
    return "TEXT"


def load_config(config: Path | None, overrides: dict[str, Any]) -> TrainConfig:
    file_values = read_config_file(config) if config else {}
    return build_config(file_values, overrides, source=str(config) if config else "config")


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
