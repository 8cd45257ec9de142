"""Shared CLI plumbing: common options, config flags generated from the schema, error exits."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from p2p_cli.engine.report import Reporter
from p2p_cli.io.config import KEYS, TrainConfig, build_config, read_config_file

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
