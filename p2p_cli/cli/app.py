"""The `p2p` command: a Typer app whose commands live in one small module each."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import typer

from p2p_cli import __version__
from p2p_cli.cli.command import P2PCommand, P2PGroup
from p2p_cli.errors import P2PError, P2PWarning, os_error_message

app = typer.Typer(
    name="p2p",
    help="Prototypical part networks (ProtoPNet) and Proto2Proto interpretability distillation.",
    cls=P2PGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"p2p {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """Prototypical part networks (ProtoPNet) and Proto2Proto interpretability distillation."""


def command(name: str, func: Callable[..., Any], cls: type[P2PCommand] = P2PCommand) -> None:
    """Register ``func`` as ``p2p NAME`` (every command uses a :class:`P2PCommand` for its help)."""
    app.command(name, cls=cls)(func)


def _register() -> None:
    from p2p_cli.cli import data, distill, models, train
    from p2p_cli.cli import evaluate as evaluate_cli
    from p2p_cli.cli import export as export_cli
    from p2p_cli.cli import hub as hub_cli
    from p2p_cli.cli import predict as predict_cli
    from p2p_cli.cli import prune as prune_cli
    from p2p_cli.cli import push as push_cli
    from p2p_cli.cli import quickstart as quickstart_cli
    from p2p_cli.cli import robustness as robustness_cli
    from p2p_cli.cli import visualize as visualize_cli

    command("quickstart", quickstart_cli.quickstart_cmd)
    command("train-teacher", train.train_teacher_cmd)
    command("distill", distill.distill_cmd)
    command("models", models.models_cmd)
    command("evaluate", evaluate_cli.evaluate_cmd, evaluate_cli.EvaluateCommand)
    command("prune", prune_cli.prune_cmd)
    command("robustness", robustness_cli.robustness_cmd, robustness_cli.RobustnessCommand)
    command("push-prototypes", push_cli.push_cmd)
    command("visualize", visualize_cli.visualize_cmd, visualize_cli.VisualizeCommand)
    command("predict", predict_cli.predict_cmd)
    command("export", export_cli.export_cmd)
    app.add_typer(data.app, name="data")
    app.add_typer(hub_cli.app, name="hub")


_register()


def user_message(exc: BaseException) -> str:
    """The one line to show for a user error (also when it crossed a DataLoader worker)."""
    text = str(exc)
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: keep the original message
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if last.startswith("p2p_cli.errors.P2PError") else last
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Our own warnings as one line on stderr; everyone else's as Python prints them."""
    if issubclass(category, P2PWarning):
        typer.echo(f"warning: {message}", err=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def main() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.showwarning = show_warning
    try:
        app()
    except P2PError as exc:
        typer.echo(f"Error: {user_message(exc)}", err=True)
        sys.exit(2)
    except OSError as exc:  # the file system's faults (disk full, read-only, permissions): one line
        typer.echo(f"Error: {os_error_message(exc)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
