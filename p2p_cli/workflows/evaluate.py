"""``evaluate``: accuracy and the interpretability-transfer metrics of several models vs a teacher.

Orchestration only: choose the rows (:mod:`p2p_cli.evaluation.selection`), resolve the
dataset from the reference run's config with the command-line overrides, read each model's
arrays from the activation cache or compute them in one streaming pass per input geometry
(:mod:`p2p_cli.evaluation.collect`), then compute every
metric (:mod:`p2p_cli.evaluation.report`): accuracy, AAP(τ) (Proto2Proto Eq. 7), AJS(τ)
(Eq. 8), PMS (Algorithm 1) and, beyond the paper, consistency and stability (Huang et al.,
ICCV 2023), explanation size and last-layer sparsity.

The result is a plain, JSON-ready dict (see :func:`evaluate_models`), so ``p2p quickstart``
and the CLI share this code. Under ``torchrun`` each process computes a contiguous block of the
split and every process then holds all arrays (the metrics are those of one process); rank 0
writes the cache and ``--save-activations``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from p2p_cli.data.images import parts_in_input
from p2p_cli.data.index import Sample
from p2p_cli.data.loaders import load_dataset_index
from p2p_cli.evaluation.cache import ActivationCache, key_id, save_activations
from p2p_cli.evaluation.collect import CollectedArrays, collect_arrays, split_samples
from p2p_cli.evaluation.options import (
    EvalOptions,
    tau_key,
)
from p2p_cli.evaluation.report import add_deltas, chance_level, headline_tau, metric_report, part_scores
from p2p_cli.evaluation.selection import select_models
from p2p_cli.io.config import TrainConfig, with_overrides
from p2p_cli.models.runs import LoadedRun
from p2p_cli.runtime.device import Runtime, make_runtime
from p2p_cli.runtime.reporter import Reporter

__all__ = ["evaluate_models"]

PAPER_KEYS = ("acc", "aap", "ajs", "pms")
"""The paper's columns, first in every row of the report, in this order."""


def evaluate_models(model_refs: Sequence[str], *, workdir: Path, teacher: str | None = None,
                    baseline: str | None = None, options: EvalOptions | None = None,
                    reporter: Reporter | None = None, rt: Runtime | None = None) -> dict[str, Any]:
    """Evaluate models against a teacher; returns the JSON-ready report.

    Shape: ``{"taus": [...], "teacher": NAME, "models": {NAME: {"acc": float, "aap": {TAU: float},
    "ajs": {TAU: float}, "pms": float, ...}}, ...}`` with τ keys as strings (``"inf"``), the
    teacher's row first; extra top-level keys: ``baseline``, ``split``, ``fidelity``,
    ``metrics``, ``dataset``, ``num_images``, ``headline_tau``, ``notes``, ``cache``,
    ``seconds`` and optionally ``chance``. Per model also ``role``, ``method``, ``backbone``,
    ``num_prototypes``, ``per_class_acc``, ``confusion``, ``pms_per_k``, ``pms_matched``,
    ``delta`` (vs the baseline), and the requested extras (``consistency``, ``stability`` in
    percent; ``explanation_size``; ``sparsity`` in [0, 1]).
    """
    t0 = time.perf_counter()
    opts = options or EvalOptions()
    opts.check()
    rep = reporter or Reporter(enabled=False)
    notes: list[str] = []
    rows, t_model, b_model = select_models(model_refs, teacher, baseline, workdir, notes)
    cfg = _reference_config(rows, t_model, opts)
    if rt is None:
        rt = make_runtime(opts.device, opts.precision or cfg.precision, cfg.channels_last)
    index = load_dataset_index(cfg)
    samples = split_samples(index, opts.split)
    for em in rows:
        em.check_classes(index)
    asked_parts = [m for m in ("consistency", "stability") if m in opts.metrics]
    want_parts = list(asked_parts)
    has_parts = bool(index.part_names) and any(s.parts for s in samples)
    if want_parts and not has_parts:
        notes.append(f"{index.name} has no part annotations: {' and '.join(want_parts)} not available")
        want_parts = []
    cache = ActivationCache(Path(workdir) / ".cache" / "activations", enabled=opts.use_cache)
    threads = max(1, cfg.workers if opts.workers is None else opts.workers)
    arrays = collect_arrays(rows, index, samples, opts.split, rt, cache, threads=threads, parts=want_parts,
                            batch_size=opts.batch_size or cfg.test_batch_size, noise_seed=opts.noise_seed,
                            reporter=rep)

    acts = arrays.acts
    ids = {name: key_id(k) for name, k in arrays.keys.items()}
    report = metric_report(acts, t_model.name, metrics=opts.metrics, taus=opts.taus, fidelity=opts.fidelity,
                           models={em.name: em.model for em in rows}, class_names=index.classes,
                           cache=cache, cache_ids=ids, notes=notes)
    if want_parts:
        _add_part_scores(report, rows, samples, arrays, want_parts)
    for em in rows:
        report["models"][em.name] = _finish_row(report["models"][em.name], em, arrays.status[em.name], asked_parts)
    add_deltas(report, b_model.name if b_model else None)
    h_tau = opts.headline_tau
    if h_tau is None:
        h_tau, why = headline_tau(acts[t_model.name], opts.taus)
    else:
        why = f"headline τ = {tau_key(h_tau)} (--headline-tau)"
    if opts.chance and ("ajs" in opts.metrics or "pms" in opts.metrics):
        report["chance"] = chance_level(acts[t_model.name], opts.taus, opts.fidelity, opts.chance_seed)
    t_acts = acts[t_model.name]
    report.update({
        "baseline": b_model.name if b_model else None,
        "split": opts.split,
        "fidelity": opts.fidelity,
        "metrics": list(opts.metrics),
        "dataset": {"name": index.name, "root": str(index.root), "num_classes": index.num_classes,
                    "class_names": index.classes},
        "num_images": int(t_acts.labels.shape[0]),
        "grid": list(t_acts.grid),
        "headline_tau": tau_key(h_tau),
        "headline_reason": why,
        "notes": list(dict.fromkeys(notes)),
        "cache": str(cache.root) if cache.enabled else None,
        "seconds": time.perf_counter() - t0,
    })
    if opts.save_activations is not None and rt.is_main:  # every rank holds the arrays; rank 0 writes
        save_activations(Path(opts.save_activations), rows, acts, arrays.clean, arrays.noisy, index, opts.split,
                         opts.noise_seed)
        report["activations_dir"] = str(opts.save_activations)
    return report


def _reference_config(rows: list[LoadedRun], teacher: LoadedRun, opts: EvalOptions) -> TrainConfig:
    """The teacher's config (else the first row's that has one) with ``--dataset``/``--data-root``."""
    cfg = teacher.config or next((em.config for em in rows if em.config is not None), None)
    return with_overrides(cfg, dataset=opts.dataset, data_root=opts.data_root)


def _add_part_scores(report: dict[str, Any], rows: Sequence[LoadedRun], samples: list[Sample],
                     arrays: CollectedArrays, want_parts: list[str]) -> None:
    """Consistency and stability of every row, from the part annotations in input pixels."""
    part_cache: dict[tuple[int, bool], np.ndarray] = {}
    for em in rows:
        geo = (em.image_size, em.crop_bbox)
        if geo not in part_cache:
            part_cache[geo] = np.stack([parts_in_input(s, em.image_size, em.crop_bbox) for s in samples])
        scores = part_scores(em.model, part_cache[geo], em.image_size, arrays.clean[em.name],
                             arrays.noisy.get(em.name) if "stability" in want_parts else None)
        for metric in want_parts:
            report["models"][em.name][metric] = scores.get(metric)


def _finish_row(row: dict[str, Any], em: LoadedRun, status: str, asked_parts: list[str]) -> dict[str, Any]:
    """A report row with what its run says about itself, the paper's keys first."""
    for metric in asked_parts:
        row.setdefault(metric, None)
    row.update({"role": em.role, "method": em.method, "backbone": em.model.config.backbone,
                "path": str(em.run.path), "weights_hash": em.weights, "activations": status})
    return {k: row[k] for k in PAPER_KEYS if k in row} | {k: v for k, v in row.items() if k not in PAPER_KEYS}
