"""Command-line options shared by several commands, each defined once.

A shared block of options is an *option group*: a frozen dataclass whose fields are annotated
with their Typer option (:class:`Common`, :class:`RunData`). A command takes a whole group as one
keyword parameter (``common: Common``) or part of one (``data: Annotated[RunData, only("data_root")]``);
:func:`with_options` turns the group's fields into ordinary flags for Typer and calls the command
with one instance of the group. The config flags of train-teacher and distill (one ``--flag`` per
config key, :func:`config_flags`) come in the same way, as a dict of the values given.

Nothing here imports torch: ``p2p --help`` must stay fast.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from p2p_cli.io.config import DATASET_KINDS, KEYS, TrainConfig
from p2p_cli.runtime.reporter import Reporter

# -- single options used by several commands ------------------------------------------------------

WorkdirOpt = Annotated[Path, typer.Option("--workdir", help="where runs live", rich_help_panel="Common")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps",
                                        rich_help_panel="Common")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="random seed", rich_help_panel="Common")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="print more", rich_help_panel="Common")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="print only results and errors",
                                        rich_help_panel="Common")]

ModelsOpt = Annotated[list[str] | None, typer.Option("--model", "-m", help="model REF(s): run directories or run "
                                                     "names in the workdir; several may follow one flag")]
ConfigFileOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config; flags override its keys")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="replace an existing run of that name")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="continue an interrupted run from its snapshot")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="also write the results as JSON to this file; - "
                                             "writes only the JSON to stdout (the tables go to stderr)")]

# The flag panels shown by --help, keyed by the first config key of each group.
_PANELS = {"dataset": "Data", "backbone": "Model", "epochs": "Schedule", "precision": "Runtime",
           "teacher": "Distillation"}
DISTILL_KEYS = ("teacher", "method", "lambda_global", "lambda_ppc", "tau_train", "ppnet_loss", "head", "fidelity",
                "kd_weight", "kd_temperature")
PATH_KEYS = ("data_root", "weights")


# -- option groups --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Common:
    """Where runs live, where to compute, and how much to print: every command takes (part of) these."""

    workdir: WorkdirOpt = Path("runs")
    device: DeviceOpt = "auto"
    seed: SeedOpt = None
    verbose: VerboseOpt = False
    quiet: QuietOpt = False

    def reporter(self) -> Reporter:
        """The console reporter these flags ask for (progress bars and tables on stderr)."""
        return Reporter(enabled=not self.quiet, verbose=self.verbose)


@dataclass(frozen=True)
class RunData:
    """What a command that reads a trained run may change about the data the run records."""

    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="dataset kind instead of the run's", metavar="[" + "|".join(DATASET_KINDS) + "]",
        rich_help_panel="Data")] = None
    data_root: Annotated[str | None, typer.Option(
        "--data-root", help="dataset root instead of the run's (e.g. the dataset moved since training)",
        metavar="PATH", rich_help_panel="Data")] = None
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", min=1, help="images per forward pass (default: the run's test_batch_size)",
        rich_help_panel="Data")] = None
    workers: Annotated[int | None, typer.Option(
        "--workers", min=0, help="image-loading workers (default: the run's workers)", rich_help_panel="Data")] = None
    precision: Annotated[str | None, typer.Option(
        "--precision", help="autocast precision of the backbone (default: the run's)",
        metavar="[auto|bf16|fp16|fp32]", rich_help_panel="Data")] = None


@dataclass(frozen=True)
class Only:
    """Marks a group parameter that takes only some of the group's fields (the rest keep their defaults)."""

    names: tuple[str, ...]


def only(*names: str) -> Only:
    return Only(names)


@dataclass(frozen=True)
class ConfigFlags:
    """Marks the parameter that receives the config flags (one per config key except ``exclude``)."""

    exclude: tuple[str, ...] = ()


def config_flags(exclude: tuple[str, ...] = ()) -> ConfigFlags:
    return ConfigFlags(tuple(exclude))


# -- turning groups into flags -----------------------------------------------------------------------

@dataclass(frozen=True)
class _Expansion:
    """How one parameter of a command becomes several flags, and back."""

    parameters: list[inspect.Parameter]
    collect: Callable[[dict[str, Any]], Any]


def _group_expansion(group: type, names: tuple[str, ...] | None) -> _Expansion:
    hints = typing.get_type_hints(group, include_extras=True)
    fields = [f for f in dataclasses.fields(group) if names is None or f.name in names]
    unknown = set(names or ()) - {f.name for f in fields}
    if unknown:
        raise TypeError(f"{group.__name__} has no option {sorted(unknown)}")
    params = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
              for f in fields]
    keys = [f.name for f in fields]
    return _Expansion(params, lambda values: group(**{k: values.pop(k) for k in keys}))


def _panel_of() -> dict[str, str]:
    out, panel = {}, "Data"
    for f in dataclasses.fields(TrainConfig):
        panel = _PANELS.get(f.name, panel)
        out[f.name] = panel
    return out


PANEL_OF = _panel_of()


def config_flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _config_metavar(key: str) -> str:
    choices = KEYS[key].metadata.get("choices")
    if choices:
        return "[" + "|".join(choices) + "]"
    if key in PATH_KEYS:
        return "PATH"
    name = str(KEYS[key].type)
    return "INT" if "int" in name else "FLOAT" if "float" in name else "TEXT"


def _config_expansion(marker: ConfigFlags) -> _Expansion:
    keys = [k for k in KEYS if k not in marker.exclude and k != "seed"]
    params = []
    for key in keys:
        fld = KEYS[key]
        help_text = fld.metadata["help"]
        default = fld.default
        if default is not None and default is not dataclasses.MISSING:
            help_text += f" (default: {default})"
        if isinstance(default, bool):
            opt = typer.Option(None, f"{config_flag(key)}/--no-{key.replace('_', '-')}", help=help_text,
                               rich_help_panel=PANEL_OF[key], show_default=False)
            annotation: Any = bool | None
        else:
            opt = typer.Option(None, config_flag(key), help=help_text, rich_help_panel=PANEL_OF[key],
                               metavar=_config_metavar(key), show_default=False)
            annotation = str | None
        params.append(inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=annotation))
    return _Expansion(params, lambda values: {k: values.pop(k) for k in keys})


def _expansion(annotation: Any) -> _Expansion | None:
    """The flags a parameter stands for, or None for an ordinary parameter."""
    base, extras = annotation, ()
    if typing.get_origin(annotation) is Annotated:
        base, *rest = typing.get_args(annotation)
        extras = tuple(rest)
    marker = next((e for e in extras if isinstance(e, (Only, ConfigFlags))), None)
    if isinstance(marker, ConfigFlags):
        return _config_expansion(marker)
    if isinstance(base, type) and base in (Common, RunData):
        return _group_expansion(base, marker.names if isinstance(marker, Only) else None)
    return None


def with_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: expand the option-group parameters of a Typer command into flags.

    Every parameter of ``func`` becomes keyword-only (Typer passes keywords); a parameter annotated
    with a group (:class:`Common`, :class:`RunData`, possibly ``Annotated[…, only(…)]``) or with
    :func:`config_flags` is replaced by its flags, and ``func`` receives the rebuilt group (or the
    dict of config values, ``None`` = not given) under the parameter's name.
    """
    sig = inspect.signature(func, eval_str=True)
    params: list[inspect.Parameter] = []
    expansions: dict[str, _Expansion] = {}
    for p in sig.parameters.values():
        exp = _expansion(p.annotation)
        if exp is None:
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
        else:
            expansions[p.name] = exp
            params.extend(exp.parameters)

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        for name, exp in expansions.items():
            kwargs[name] = exp.collect(kwargs)
        return func(**kwargs)

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper
