"""Command entry points: for each CLI command that needs more than one call, the one function it calls.

Each takes the command's options (a frozen dataclass of plain values) and a console
:class:`~p2p_cli.runtime.reporter.Reporter`, makes the runtime, calls the workflow and returns what
the command prints; none of them prints a result itself. The heavy modules (torch, timm) are
imported inside the functions, so that ``p2p --help`` never loads them.

This module is a transitional home: each function belongs with its workflow
(``workflows/<command>.py``); they move there, or into the public API, when those modules are
reorganised. ``evaluate``, ``robustness`` and ``push-prototypes`` call their workflow directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2p_cli.errors import P2PError
from p2p_cli.io.config import TrainConfig, load_config
from p2p_cli.runtime.reporter import Reporter

if TYPE_CHECKING:
    from p2p_cli.io.rundir import RunDir
    from p2p_cli.models.registry import BackboneSpec
    from p2p_cli.runtime.device import Runtime
    from p2p_cli.workflows.prune import PruneOptions
    from p2p_cli.workflows.visualize import VisualizeRequest, VisualizeResult


def for_rank(reporter: Reporter, rt: Runtime) -> Reporter:
    """``reporter`` on the main process; a silent one on the other ranks of a torchrun job."""
    return reporter if rt.is_main else Reporter(enabled=False, verbose=reporter.verbose)


# -- train-teacher, distill -----------------------------------------------------------------------

@dataclass(frozen=True)
class TrainOptions:
    """A training command: a YAML config, the flags that override its keys, and the run to write."""

    config_file: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)  # config key → flag value (None: not given)
    name: str | None = None  # default: see train_teacher_command / distill_command
    workdir: Path = Path("runs")
    device: str = "auto"
    overwrite: bool = False
    resume: bool = False


@dataclass(frozen=True)
class TrainOutcome:
    path: Path
    test_acc: float
    seconds: float
    is_main: bool  # False on the other ranks of a torchrun job, which print nothing


def _train(opts: TrainOptions, reporter: Reporter, train: Callable[..., tuple[RunDir, dict[str, Any]]],
           default_name: Callable[[TrainConfig], str]) -> TrainOutcome:
    from p2p_cli.runtime.device import make_runtime

    cfg = load_config(opts.config_file, dict(opts.overrides))
    rt = make_runtime(opts.device, cfg.precision, cfg.channels_last)
    rep = for_rank(reporter, rt)
    rep.debug("resolved config:\n" + "\n".join(f"  {k}: {v}" for k, v in cfg.to_dict().items()))
    run, result = train(cfg, workdir=opts.workdir, name=opts.name or default_name(cfg), rt=rt, reporter=rep,
                        overwrite=opts.overwrite, resume=opts.resume)
    return TrainOutcome(run.path, result["test_acc"], result["seconds"], rt.is_main)


def train_teacher_command(opts: TrainOptions, reporter: Reporter) -> TrainOutcome:
    """Train a ProtoPNet into ``workdir/name`` (default name: the backbone)."""
    from p2p_cli.workflows.train_teacher import train_teacher

    return _train(opts, reporter, train_teacher, lambda cfg: cfg.backbone)


def distill_command(opts: TrainOptions, reporter: Reporter) -> TrainOutcome:
    """Distill ``overrides["teacher"]`` into a student (default name: BACKBONE-METHOD)."""
    from p2p_cli.workflows.distill import distill

    return _train(opts, reporter, distill, lambda cfg: f"{cfg.backbone}-{cfg.method}")


# -- prune --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PruneRequest:
    """Prune run ``model`` with ``options`` into a new run (``name`` default: SOURCE-pruned)."""

    model: str
    options: PruneOptions
    name: str | None = None
    overwrite: bool = False
    data_root: str | None = None  # default: the run's
    workdir: Path = Path("runs")
    device: str = "auto"
    seed: int | None = None


def prune_command(req: PruneRequest, reporter: Reporter) -> tuple[RunDir, dict[str, Any]]:
    """The new run and its summary (rounds, classes, before/after); one process only."""
    from p2p_cli.io.config import config_from_dict
    from p2p_cli.io.rundir import resolve_ref
    from p2p_cli.runtime.device import make_runtime
    from p2p_cli.workflows.prune import prune

    source = resolve_ref(req.model, req.workdir)
    src_cfg = config_from_dict(source.read_config(), source=str(source.config_path))
    rt = make_runtime(req.device, src_cfg.precision, src_cfg.channels_last)
    if rt.distributed:
        raise P2PError("p2p prune runs in one process; start it without torchrun")
    return prune(str(source.path), workdir=req.workdir, name=req.name, opts=req.options, rt=rt, reporter=reporter,
                 overwrite=req.overwrite, data_root=req.data_root, seed=req.seed)


# -- visualize ------------------------------------------------------------------------------------

def visualize_command(req: VisualizeRequest, reporter: Reporter, *, device: str = "auto",
                      precision: str = "auto") -> VisualizeResult:
    """Explain ``req.image`` with ``req.models`` on ``device`` (figures, HTML page, JSON)."""
    from p2p_cli.runtime.device import make_runtime
    from p2p_cli.workflows.visualize import visualize

    rt = make_runtime(device, precision, False)
    return visualize(req, rt, reporter)


# -- models ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelsListing:
    backbones: list[BackboneSpec]
    timm_models: list[str] | None  # None: no --timm pattern given
    runs: list[tuple[str, dict[str, Any]]]  # (run name, model.safetensors metadata), sorted by name


def models_command(workdir: Path, timm_pattern: str | None = None) -> ModelsListing:
    """The registered backbones, the timm models matching ``timm_pattern``, the finished runs in ``workdir``."""
    from p2p_cli.io.checkpoint import read_metadata
    from p2p_cli.io.rundir import list_runs
    from p2p_cli.models.registry import list_backbones

    timm_models = None
    if timm_pattern:
        import timm

        timm_models = list(timm.list_models(timm_pattern))
    runs = [(run.name, read_metadata(run.model_path)) for run in list_runs(workdir)]
    return ModelsListing(list_backbones(), timm_models, runs)
