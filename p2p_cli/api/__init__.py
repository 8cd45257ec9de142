"""The public Python API: every p2p command as one function, with the CLI's defaults.

The CLI (:mod:`p2p_cli.cli`) parses its flags and calls exactly one of these functions, so a
script or a notebook gets everything the commands do::

    from p2p_cli.api import train_teacher, distill, evaluate
    teacher = train_teacher("examples/synthetic-fast.yaml", name="teacher", workdir="runs")
    student = distill("examples/synthetic-fast.yaml", teacher="teacher", student="resnet18", name="p2p")
    report = evaluate(["p2p"], teacher="teacher", workdir="runs")

Each function builds the runtime (device, precision) and the console reporter (``quiet=True``
by default: nothing but errors is printed; ``quiet=False`` shows the progress bars and tables
on stderr), calls the command's workflow (:mod:`p2p_cli.workflows`) and returns its result.
Errors meant for users are :class:`~p2p_cli.errors.P2PError` with a one-line message. Nothing
heavy (torch, timm) is imported until a function runs.
"""

from p2p_cli.api.commands import (
    PruneOutcome,
    RunResult,
    attack,
    distill,
    evaluate,
    explain,
    export,
    load_run,
    predict,
    prune,
    push,
    quickstart,
    train_teacher,
)
from p2p_cli.api.tools import ModelsListing, check_data, hub_pull, hub_push, list_models, prepare_data, synthesize

__all__ = [
    "ModelsListing", "PruneOutcome", "RunResult", "attack", "check_data", "distill", "evaluate", "explain", "export",
    "hub_pull", "hub_push", "list_models", "load_run", "predict", "prepare_data", "prune", "push", "quickstart",
    "synthesize", "train_teacher",
]
