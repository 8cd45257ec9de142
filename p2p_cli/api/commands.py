"""The commands as functions: training (train-teacher, distill, quickstart, prune) and the
commands that read trained runs (push-prototypes, evaluate, visualize, robustness, predict,
export). See :mod:`p2p_cli.api` for the conventions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2p_cli.api._common import PathLike, for_rank, listed, reporter

if TYPE_CHECKING:
    from p2p_cli.io.config import TrainConfig
    from p2p_cli.models.runs import LoadedRun
    from p2p_cli.workflows.export import ExportResult
    from p2p_cli.workflows.predict import PredictResult, Skipped
    from p2p_cli.workflows.quickstart import QuickstartResult
    from p2p_cli.workflows.visualize import VisualizeResult


def load_run(ref: PathLike, workdir: PathLike = "runs", *, provenance: bool = True) -> LoadedRun:
    """A finished run: its model (eval mode, on the CPU), metadata, config and prototype records.

    ``ref`` is a run directory, its ``model.safetensors``, or a run name inside ``workdir``
    (see :class:`~p2p_cli.models.runs.LoadedRun`). Example::

        from p2p_cli.api import load_run
        run = load_run("teacher", workdir="runs")
        print(run.model.num_prototypes, run.classes[:3], run.config.backbone)
    """
    from p2p_cli.models.runs import load_run as _load_run

    return _load_run(ref, workdir, provenance=provenance)


# -- training -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunResult:
    """A finished training command: the run directory, its final test accuracy and wall time.
    ``is_main`` is False on the other ranks of a torchrun job (which print nothing)."""

    path: Path
    test_acc: float | None
    seconds: float
    is_main: bool = True


def _train(workflow: Callable[..., Any], config: PathLike | None, overrides: dict[str, Any], name: str | None,
           default_name: Callable[[TrainConfig], str], workdir: PathLike, device: str, overwrite: bool,
           resume: bool, quiet: bool, verbose: bool) -> RunResult:
    """Resolve the config (defaults ← file ← overrides), make the runtime, run ``workflow``."""
    from p2p_cli.io.config import load_config
    from p2p_cli.runtime.device import make_runtime

    cfg = load_config(config, overrides)
    rt = make_runtime(device, cfg.precision, cfg.channels_last)
    rep = for_rank(reporter(quiet, verbose), rt)
    rep.debug("resolved config:\n" + "\n".join(f"  {k}: {v}" for k, v in cfg.to_dict().items()))
    run, result = workflow(cfg, workdir=Path(workdir), name=name or default_name(cfg), rt=rt, reporter=rep,
                           overwrite=overwrite, resume=resume)
    return RunResult(run.path, result["test_acc"], result["seconds"], rt.is_main)


def train_teacher(config: PathLike | None = None, *, name: str | None = None, workdir: PathLike = "runs",
                  device: str = "auto", overwrite: bool = False, resume: bool = False, quiet: bool = True,
                  verbose: bool = False, **config_overrides: Any) -> RunResult:
    """Train a ProtoPNet (or a ProtoTree with ``arch="prototree"``) into ``workdir/name``:
    warm-up, joint training, prototype push, last layer (Chen et al., NeurIPS 2019).

    ``config`` is a YAML file; every config key (README, "Configuration keys") may be given as a
    keyword and beats the file (``None``: not given). ``name`` defaults to the backbone.
    Example::

        from p2p_cli.api import train_teacher
        result = train_teacher("examples/synthetic-fast.yaml", backbone="resnet18", name="t", epochs=2)
        print(result.path, result.test_acc)
    """
    from p2p_cli.workflows.train_teacher import train_teacher as workflow

    return _train(workflow, config, config_overrides, name, lambda cfg: cfg.backbone, workdir, device,
                  overwrite, resume, quiet, verbose)


def distill(config: PathLike | None = None, *, teacher: str | None = None, student: str | None = None,
            name: str | None = None, workdir: PathLike = "runs", device: str = "auto", overwrite: bool = False,
            resume: bool = False, quiet: bool = True, verbose: bool = False, **config_overrides: Any) -> RunResult:
    """Distill the trained run ``teacher`` into a student of backbone ``student`` (Keswani et al.,
    CVPR 2022): Proto2Proto by default, ``method="none"`` for the baseline student, ``hint``,
    ``rkd`` or ``kd`` for the KD baselines. ``name`` defaults to ``BACKBONE-METHOD``. Example::

        from p2p_cli.api import distill
        result = distill("examples/synthetic-fast.yaml", teacher="t", student="resnet18", name="s")
    """
    from p2p_cli.workflows.distill import distill as workflow

    overrides = {**config_overrides, "teacher": teacher, "backbone": student}
    return _train(workflow, config, overrides, name, lambda cfg: f"{cfg.backbone}-{cfg.method}", workdir, device,
                  overwrite, resume, quiet, verbose)


def quickstart(*, workdir: PathLike = "runs", preset: str = "fast", seeds: int = 1, ablations: bool = False,
               device: str = "auto", quiet: bool = True, verbose: bool = False) -> QuickstartResult:
    """The whole Proto2Proto pipeline on the built-in synthetic data (teacher, baseline, Proto2Proto
    student, pruned student, evaluation, figures); writes ``workdir/report/`` and returns the
    report (``result.report``; ``result.is_main`` is False on the other ranks of a torchrun job).
    Finished runs are reused, interrupted ones resumed. Example::

        from p2p_cli.api import quickstart
        result = quickstart(workdir="runs", preset="tiny")
        print(result.report["verdict"]["text"])
    """
    from p2p_cli.runtime.device import make_runtime
    from p2p_cli.workflows.presets import get_preset
    from p2p_cli.workflows.quickstart import QuickstartOptions, QuickstartResult
    from p2p_cli.workflows.quickstart import quickstart as workflow

    opts = QuickstartOptions(workdir=Path(workdir), preset=preset, seeds=seeds, ablations=ablations, device=device)
    cfg = get_preset(preset)["config"]
    rt = make_runtime(device, cfg["precision"], cfg["channels_last"])
    rep = for_rank(reporter(quiet, verbose), rt)
    if rt.device.type == "cpu" and rt.amp_dtype is None and cfg["precision"] == "auto":
        rep.info("[dim]this CPU has neither AMX nor AVX512-BF16: training runs in fp32, about 2-3× slower than "
                 "bf16 on a CPU that has them (see README, Performance)[/]")
    return QuickstartResult(workflow(opts, rt, rep), rt.is_main)


# -- commands on trained runs --------------------------------------------------------------------

def push(model: str, *, workdir: PathLike = "runs", dataset: str | None = None, data_root: str | None = None,
         save_images: bool = True, name: str | None = None, overwrite: bool = False, batch_size: int | None = None,
         workers: int | None = None, device: str = "auto", precision: str | None = None, quiet: bool = True,
         verbose: bool = False) -> dict[str, Any]:
    """Project run ``model``'s prototypes onto their nearest own-class training patches (ProtoPNet's
    push) and write ``prototypes.json`` (and ``prototypes/*.png``); returns the JSON-ready summary
    (``prototypes``, ``moved``, ``target``, …). A push that moves prototypes needs ``overwrite=True``
    or a new ``name``. Example::

        from p2p_cli.api import push
        summary = push("t", workdir="runs", save_images=False)
        assert summary["moved"] == 0  # a trained run was pushed at the end of its training
    """
    from p2p_cli.workflows.push import PushRequest, push_run

    req = PushRequest(model=model, workdir=Path(workdir), dataset=dataset, data_root=data_root,
                      save_images=save_images, name=name, overwrite=overwrite, batch_size=batch_size, workers=workers,
                      device=device, precision=precision)
    from p2p_cli.runtime.distributed import launched_as_main

    return push_run(req, reporter(quiet or not launched_as_main(), verbose))


@dataclass(frozen=True)
class PruneOutcome:
    """The pruned run's directory and its summary (rounds, classes, prototypes and accuracy before/after);
    ``is_main`` is False on the other ranks of a torchrun job (which print nothing)."""

    path: Path
    summary: dict[str, Any]
    is_main: bool = True


def prune(model: str, *, target: int | None = None, step: int | None = None, method: str = "protopshare",
          distance: str = "data", fine_tune_epochs: int | None = None, feature_epochs: int = 0, knn_k: int = 6,
          knn_min: int = 3, name: str | None = None, overwrite: bool = False, data_root: str | None = None,
          workdir: PathLike = "runs", device: str = "auto", seed: int | None = None, quiet: bool = True,
          verbose: bool = False) -> PruneOutcome:
    """Prune run ``model`` into a new run (default name ``SOURCE-pruned``; the source is never
    modified): ProtoPShare merging down to ``target`` prototypes (Rymarczyk et al., KDD 2021; each
    step's threshold is the ``step``-th smallest nearest-neighbour dissimilarity, ``distance``
    ``"data"`` or ``"vectors"``), or ProtoPNet's k-NN test with ``method="knn"``. Under torchrun
    the passes are sharded and the fine-tuning runs under DistributedDataParallel; rank 0 writes
    the run. Example::

        from p2p_cli.api import prune
        out = prune("s", target=4, workdir="runs")
        print(out.summary["prototypes_before"], "→", out.summary["prototypes_after"])
    """
    from p2p_cli.io.config import config_from_dict
    from p2p_cli.io.rundir import resolve_ref
    from p2p_cli.pruning.loop import PruneOptions
    from p2p_cli.runtime.device import make_runtime
    from p2p_cli.workflows.prune import prune as workflow

    opts = PruneOptions(method=method, target=target, step=step, distance=distance, fine_tune_epochs=fine_tune_epochs,
                        feature_epochs=feature_epochs, knn_k=knn_k, knn_min=knn_min)
    source = resolve_ref(model, Path(workdir))
    src_cfg = config_from_dict(source.read_config(), source=str(source.config_path))
    rt = make_runtime(device, src_cfg.precision, src_cfg.channels_last)
    run, summary = workflow(str(source.path), workdir=Path(workdir), name=name, opts=opts, rt=rt,
                            reporter=for_rank(reporter(quiet, verbose), rt), overwrite=overwrite, data_root=data_root,
                            seed=seed)
    return PruneOutcome(run.path, summary, rt.is_main)


def evaluate(models: Sequence[str] = (), *, teacher: str | None = None, baseline: str | None = None,
             metrics: Sequence[str] | None = None, taus: Sequence[str | float] | None = None, split: str = "test",
             fidelity: str = "paper", dataset: str | None = None, data_root: str | None = None,
             batch_size: int | None = None, workers: int | None = None, precision: str | None = None,
             save_activations: PathLike | None = None, headline_tau: str | float | None = None, noise_seed: int = 0,
             chance: bool = False, cache: bool = True, seed: int | None = None, workdir: PathLike = "runs",
             device: str = "auto", quiet: bool = True, verbose: bool = False) -> dict[str, Any]:
    """Accuracy, AAP (Proto2Proto Eq. 7), AJS (Eq. 8) and PMS (Algorithm 1) of ``models`` against
    their teacher, plus the extra metrics asked for (``metrics=["all"]``); returns the JSON-ready
    report (``report["models"][NAME]["ajs"]["inf"]``, …), the teacher's row first. ``taus``
    default to 0.01 0.1 0.2 0.45 1 3 5 inf. Example::

        from p2p_cli.api import evaluate
        report = evaluate(["s"], teacher="t", metrics=["acc", "ajs", "pms"], workdir="runs")
        print(report["models"]["s"]["pms"])
    """
    from p2p_cli.evaluation.options import EvalOptions, parse_metrics, parse_taus
    from p2p_cli.workflows.evaluate import evaluate_models

    h_tau = parse_taus([headline_tau])[0] if headline_tau is not None else None
    opts = EvalOptions(metrics=parse_metrics(listed(metrics)), taus=parse_taus(listed(taus)), split=split,
                       fidelity=fidelity, dataset=dataset, data_root=data_root, batch_size=batch_size, workers=workers,
                       precision=precision, device=device, use_cache=cache, noise_seed=noise_seed,
                       headline_tau=h_tau, chance=chance, chance_seed=seed or 0,
                       save_activations=Path(save_activations) if save_activations is not None else None)
    from p2p_cli.runtime.distributed import launched_as_main

    return evaluate_models(listed(models), workdir=Path(workdir), teacher=teacher, baseline=baseline, options=opts,
                           reporter=reporter(quiet or not launched_as_main(), verbose))


def explain(image: PathLike | None = None, *, models: Sequence[str] = (), top_k: int = 5, out: PathLike | None = None,
            class_name: str | None = None, prototypes: bool = False, gallery_rows: int = 10, show_parts: bool = False,
            precision: str = "auto", json_path: PathLike | None = None, workdir: PathLike = "runs",
            device: str = "auto", quiet: bool = True, verbose: bool = False) -> VisualizeResult:
    """Explain ``image`` with one or more runs side by side (``p2p visualize``, Proto2Proto Fig. 1):
    per model the top-k prototypes by similarity × last-layer weight; with ``prototypes=True`` also
    the teacher-vs-student gallery of matched prototypes (Fig. 4). Writes ``explanation.png``,
    ``gallery.png`` and ``index.html`` to ``out`` (default ``workdir/visualizations/IMAGE-STEM``);
    returns the files and the numbers (``result.summary``). Example::

        from p2p_cli.api import explain
        result = explain("bird.jpg", models=["t", "s"], top_k=3, workdir="runs")
        print(result.files["html"], result.summary["models"][0]["predicted"])
    """
    from p2p_cli.runtime.device import make_runtime
    from p2p_cli.workflows.visualize import VisualizeRequest, visualize

    req = VisualizeRequest(image=Path(image) if image is not None else None, models=listed(models),
                           workdir=Path(workdir), out=Path(out) if out is not None else None, top_k=top_k,
                           class_name=class_name, prototypes=prototypes, show_parts=show_parts,
                           gallery_rows=gallery_rows, json_path=Path(json_path) if json_path is not None else None)
    return visualize(req, make_runtime(device, precision, False), reporter(quiet, verbose))


def attack(models: Sequence[str] = (), *, attack: str = "head-on-stomach", eps: str | float = "8/255",
           step: str | float = "2/255", iters: int = 40, top_k: int = 5, images: int | None = None,
           region: str = "target", adv_iters: int = 10, quality: int = 20, teacher: str | None = None,
           figures: int = 4, out: PathLike | None = None, batch_size: int = 32, dataset: str | None = None,
           data_root: str | None = None, precision: str | None = None, seed: int | None = None,
           workdir: PathLike = "runs", device: str = "auto", quiet: bool = True,
           verbose: bool = False) -> dict[str, Any]:
    """Robustness of the explanations (``p2p robustness``; Hoffmann et al. 2021): the head-on-stomach
    PGD attack (Eq. 2-3; ``images`` default 200) or ``attack="jpeg"``; with ``teacher`` the
    transfer view. Figures go to ``out`` (default ``workdir/robustness/ATTACK``); returns the
    JSON-ready report. Example::

        from p2p_cli.api import attack
        report = attack(["t"], images=20, iters=10, figures=0, workdir="runs")
        print(report["models"]["t"])
    """
    from p2p_cli.attacks.head_on_stomach import AttackSettings
    from p2p_cli.attacks.jpeg import JpegSettings
    from p2p_cli.attacks.pixels import parse_budget
    from p2p_cli.workflows.robustness import RobustnessOptions, run_robustness

    s = seed or 0
    stomach = AttackSettings(eps=parse_budget(eps, "eps"), step=parse_budget(step, "step"), iters=iters, top_k=top_k,
                             images=images if images is not None else 200, region=region, adv_iters=adv_iters,
                             batch_size=batch_size, seed=s, figures=max(0, figures))
    jpeg = JpegSettings(quality=quality, top_k=top_k, images=images, batch_size=batch_size, seed=s)
    folder = Path(out) if out is not None else None
    if folder is None and not (attack == "head-on-stomach" and figures <= 0):
        folder = Path(workdir) / "robustness" / attack
    opts = RobustnessOptions(attack=attack, stomach=stomach, jpeg=jpeg, teacher=teacher, dataset=dataset,
                             data_root=data_root, precision=precision, device=device, out=folder)
    return run_robustness(listed(models), workdir=Path(workdir), options=opts, reporter=reporter(quiet, verbose))


def predict(images: Sequence[PathLike], *, model: str, top_k: int = 5, batch_size: int = 32,
            precision: str = "auto", on_skip: Callable[[Skipped], None] | None = None, workdir: PathLike = "runs",
            device: str = "auto", quiet: bool = True, verbose: bool = False) -> PredictResult:
    """Classify image files and folders (searched recursively) with run ``model`` (also
    ``hf-hub:ORG/NAME``): per image the class, its probability and the top-k prototypes by
    similarity with their cell and box. Unreadable files are skipped (``result.skipped``,
    ``on_skip``). Example::

        from p2p_cli.api import predict
        result = predict(["photos/"], model="t", top_k=3, workdir="runs")
        print([(p.image, p.class_name) for p in result.predictions])
    """
    from p2p_cli.runtime.device import make_runtime
    from p2p_cli.workflows.predict import PredictRequest
    from p2p_cli.workflows.predict import predict as workflow

    rt = make_runtime(device, precision, False)
    req = PredictRequest(model=model, inputs=[Path(p) for p in listed(images)], workdir=Path(workdir), top_k=top_k,
                         batch_size=batch_size, on_skip=on_skip)
    return workflow(req, rt, reporter(quiet, verbose))


def export(model: str, *, format: str = "onnx", out: PathLike | None = None, check: bool = True,
           workdir: PathLike = "runs", quiet: bool = True, verbose: bool = False) -> ExportResult:
    """Write run ``model`` as ONNX or TorchScript (images (B, 3, S, S) → logits (B, K), min distances
    (B, m)) and, with ``check``, compare it with PyTorch on sample inputs (``result.check``).
    Example::

        from p2p_cli.api import export
        result = export("t", format="torchscript", workdir="runs")
        print(result.path, result.check.ok)
    """
    from p2p_cli.workflows.export import ExportRequest, export_run

    req = ExportRequest(model=model, format=format, workdir=Path(workdir), out=Path(out) if out else None,
                        check=check)
    return export_run(req, reporter(quiet, verbose))
