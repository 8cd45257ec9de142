"""quickstart: the paper's whole pipeline on the built-in synthetic data, ending in a report.

teacher (train-teacher) → baseline (distill --method none) → proto2proto (distill) →
proto2proto-pruned (prune) → evaluate → visualize → report. Every step calls the same workflow
function as its command and is skipped when its run is complete; an interrupted run is
resumed from its snapshot, so re-running never recomputes finished work and (deterministic
mode) ends with the same report. The verdict and the statistics over seeds come from
:mod:`p2p_cli.evaluation.comparison`; the presets and the ablation rows from
:mod:`p2p_cli.workflows.presets`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2p_cli.data.loaders import load_dataset_index
from p2p_cli.evaluation.comparison import seed_statistics, verdict
from p2p_cli.evaluation.options import EvalOptions
from p2p_cli.io.atomic import atomic_write_json
from p2p_cli.io.checkpoint import read_metadata
from p2p_cli.io.config import TrainConfig, build_config, config_from_dict
from p2p_cli.io.rundir import RunDir
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.workflows.distill import distill
from p2p_cli.workflows.evaluate import evaluate_models
from p2p_cli.workflows.presets import ABLATIONS, get_preset, role_configs
from p2p_cli.workflows.prune import PruneOptions, prune
from p2p_cli.workflows.train_teacher import train_teacher
from p2p_cli.workflows.visualize import VisualizeRequest, visualize

ROLES = ("teacher", "baseline", "proto2proto")
STUDENT_SEED = 1000  # students of seed k use STUDENT_SEED + k, the teacher k


@dataclass(frozen=True)
class QuickstartOptions:
    workdir: Path
    preset: str = "fast"
    seeds: int = 1
    ablations: bool = False
    explain_images: int = 3
    device: str = "auto"


@dataclass(frozen=True)
class QuickstartResult:
    report: dict[str, Any]
    is_main: bool  # False on the other ranks of a torchrun job, which print nothing


@dataclass
class StepLog:
    timings: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def run_name(role: str, seed_index: int) -> str:
    """``teacher``, ``baseline``, ``proto2proto`` for the first seed; ``<role>-seed<k>`` after it."""
    return role if seed_index == 0 else f"{role}-seed{seed_index}"


def _run_once(log: StepLog, workdir: Path, name: str, fn: Callable[..., Any], reporter: Reporter) -> None:
    """Skip a finished run, resume an interrupted one, replace one killed before its first snapshot."""
    run = RunDir(workdir / name)
    if run.is_complete():
        log.skipped.append(name)
        reporter.info(f"[dim]{name}: finished run found, skipped[/]")
        return
    t0 = time.perf_counter()
    if run.snapshot_path.is_file():
        fn(resume=True, overwrite=False)
    else:
        fn(resume=False, overwrite=run.path.exists())
    log.timings[name] = round(time.perf_counter() - t0, 1)


def seed_config(base: dict[str, Any], seed: int, **overrides: Any) -> TrainConfig:
    return build_config({**base, "seed": seed, "deterministic": True, **overrides}, source="quickstart preset")


def train_all(opts: QuickstartOptions, rt: Runtime, reporter: Reporter, log: StepLog) -> None:
    preset = get_preset(opts.preset)
    teacher_base, student_base = role_configs(preset)
    teacher_bb, student_bb = preset["teacher"], preset["student"]
    w = opts.workdir
    for k in range(opts.seeds):
        t, b, p = (run_name(r, k) for r in ROLES)
        t_cfg = seed_config(teacher_base, k, backbone=teacher_bb)
        _run_once(log, w, t, lambda t_cfg=t_cfg, t=t, **kw: train_teacher(t_cfg, workdir=w, name=t, rt=rt,
                                                                           reporter=reporter, **kw), reporter)
        for name, method in ((b, "none"), (p, "proto2proto")):
            # both students share a seed (a fair comparison) that differs from the teacher's
            s_cfg = seed_config(student_base, STUDENT_SEED + k, backbone=student_bb, teacher=t, method=method)
            _run_once(log, w, name, lambda s_cfg=s_cfg, name=name, **kw: distill(
                s_cfg, workdir=w, name=name, rt=rt, reporter=reporter, **kw), reporter)
    if opts.ablations:
        for suffix, _, overrides in ABLATIONS:
            cfg = seed_config(student_base, STUDENT_SEED, backbone=student_bb, teacher="teacher", method="proto2proto",
                              **overrides)
            name = f"ablation-{suffix}"
            _run_once(log, w, name, lambda cfg=cfg, name=name, **kw: distill(
                cfg, workdir=w, name=name, rt=rt, reporter=reporter, **kw), reporter)
    def do_prune(resume: bool, overwrite: bool) -> None:  # prune writes no snapshot: redo it whole
        m = int(read_metadata(w / "proto2proto" / "model.safetensors")["num_prototypes"])
        prune("proto2proto", workdir=w, name="proto2proto-pruned",
              opts=PruneOptions(method="protopshare", target=m // 2), rt=rt, reporter=reporter,
              overwrite=overwrite or resume)

    _run_once(log, w, "proto2proto-pruned", do_prune, reporter)


def evaluate_all(opts: QuickstartOptions, rt: Runtime, reporter: Reporter) -> tuple[dict[str, Any], list[dict]]:
    """The seed-0 report (with the pruned and ablation rows) and one report per further seed."""
    w = opts.workdir
    models = ["baseline", "proto2proto", "proto2proto-pruned"]
    if opts.ablations:
        models += [f"ablation-{s}" for s, _, _ in ABLATIONS]
    eval_opts = EvalOptions(metrics=("acc", "aap", "ajs", "pms", "consistency", "stability", "explanation",
                                     "sparsity"))
    main = evaluate_models(models, workdir=w, teacher="teacher", baseline="baseline", options=eval_opts,
                           reporter=reporter, rt=rt)
    others = []
    for k in range(1, opts.seeds):
        others.append(evaluate_models([run_name("baseline", k), run_name("proto2proto", k)], workdir=w,
                                      teacher=run_name("teacher", k), baseline=run_name("baseline", k),
                                      options=EvalOptions(), reporter=reporter, rt=rt))
    return main, others


def explain_images(workdir: Path, count: int) -> list[Path]:
    """The first test image of ``count`` different classes (deterministic)."""
    teacher = RunDir(workdir / "teacher")
    cfg = config_from_dict(teacher.read_config(), source=str(teacher.config_path))
    index = load_dataset_index(cfg)
    picked: list[Path] = []
    seen: set[int] = set()
    for sample in index.test:
        if sample.label not in seen:
            seen.add(sample.label)
            picked.append(Path(sample.path))
        if len(picked) == count:
            break
    return picked


def quickstart(opts: QuickstartOptions, rt: Runtime, reporter: Reporter) -> dict[str, Any]:
    """Run (or finish) the pipeline and write ``<workdir>/report/``; returns the report JSON."""
    from p2p_cli.viz.report import write_report

    t0 = time.perf_counter()
    log = StepLog()
    opts.workdir.mkdir(parents=True, exist_ok=True)
    train_all(opts, rt, reporter, log)
    t_eval = time.perf_counter()
    main, others = evaluate_all(opts, rt, reporter)
    log.timings["evaluate"] = round(time.perf_counter() - t_eval, 1)
    tau = str(main.get("headline_tau", "inf"))
    out = opts.workdir / "report"
    t_vis = time.perf_counter()
    figures: list[dict[str, Any]] = []
    for i, image in enumerate(explain_images(opts.workdir, opts.explain_images)):
        res = visualize(VisualizeRequest(image=image, models=["teacher", "baseline", "proto2proto"],
                                         workdir=opts.workdir, out=out / "figures" / f"explain-{i + 1}", top_k=5,
                                         prototypes=(i == 0), show_parts=True), rt, reporter)
        figures.append({"image": str(image), "files": {k: str(v) for k, v in res.files.items()}})
    log.timings["visualize"] = round(time.perf_counter() - t_vis, 1)
    report = dict(main)
    report["verdict"] = verdict(main, tau)
    report["headline_tau_key"] = tau
    if opts.seeds > 1:
        report["seeds"] = {"n": opts.seeds, "statistics": seed_statistics([main, *others], tau, ROLES, run_name),
                           "reports": others}
    if opts.ablations:
        report["ablations"] = [{"run": f"ablation-{s}", "losses": label} for s, label, _ in ABLATIONS]
    report["preset"] = opts.preset
    report["figures"] = figures
    log.timings["total"] = round(time.perf_counter() - t0, 1)
    report["timings"] = {"seconds": log.timings, "skipped": log.skipped}
    curves = {name: RunDir(opts.workdir / name).read_metrics() for name in ("teacher", "baseline", "proto2proto")}
    write_report(out, report, curves)
    atomic_write_json(out / "report.json", json.loads(json.dumps(report, default=str)))
    return report

