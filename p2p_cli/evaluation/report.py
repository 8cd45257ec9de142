"""Every metric of every model from its evaluation arrays, in the JSON shape of ``evaluate``.

From the :class:`~p2p_cli.evaluation.activations.Activations` of each row (same images, same
order): accuracy, per-class accuracy and confusion; AAP(τ) (Proto2Proto Eq. 7), AJS(τ) with
the teacher (Eq. 8) and PMS (Algorithm 1) — :mod:`p2p_cli.metrics`; a ProtoTree's inference
modes (Nauta et al., CVPR 2021); explanation size and last-layer sparsity; consistency and
stability from part annotations (Huang et al., ICCV 2023); the chance level, the headline τ
and the Δ to the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from p2p_cli.errors import P2PError
from p2p_cli.evaluation.activations import Activations, PartArgmax
from p2p_cli.evaluation.cache import ActivationCache
from p2p_cli.evaluation.options import tau_key
from p2p_cli.metrics import (
    aap,
    accuracy,
    active_mask,
    ajs,
    confusion_matrix,
    consistency_score,
    explanation_size,
    last_layer_sparsity,
    part_coverage,
    per_class_accuracy,
    pms,
    prototype_consistency,
    stability,
    stability_score,
)
from p2p_cli.models.protopnet import ProtoPNet

__all__ = [
    "ACTIVE_IMAGE_FRACTION",
    "add_deltas",
    "chance_level",
    "headline_tau",
    "metric_report",
    "part_scores",
    "tree_modes",
]

ACTIVE_IMAGE_FRACTION = 0.9
"""Default headline τ: the smallest listed τ where the teacher has an active patch in ≥ 90 % of images."""


def _finite(x: float | None) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return float(x)


def _pms_entry(acts_t: Activations, acts_s: Activations, cache: ActivationCache | None, cache_name: str | None
               ) -> dict[str, Any]:
    """PMS of ``acts_s`` against the teacher's ``acts_t`` (argmins ``(N, mT)``, ``(N, mS)``) as
    the JSON entry ``{score, per_k, m_values, num_matched, ...}``, read from or stored in the
    cache as ``cache_name`` when given."""
    if cache is not None and cache_name:
        hit = cache.load_json(cache_name)
        if hit is not None and {"score", "per_k", "m_values", "num_matched"} <= hit.keys():
            return hit
    res = pms(acts_t.argmin, acts_s.argmin, acts_t.num_locations)
    entry = {"score": res.score, "per_k": res.per_k, "m_values": res.m_values, "num_matched": res.num_matched,
             "num_teacher": res.num_teacher, "num_student": res.num_student,
             "seconds": sum(res.timings.values())}
    if cache is not None and cache_name:
        cache.save_json(cache_name, entry)
    return entry


def part_scores(model: ProtoPNet, parts: np.ndarray, image_size: int, clean: PartArgmax,
                noisy: PartArgmax | None) -> dict[str, float | None]:
    """Consistency and stability (Huang et al., ICCV 2023) from arg-max pixels.

    parts: ``(N, P, 3)`` annotated points ``(x, y, visible)`` in input pixels. For prototype j,
    over the images of its class(es): coverage = visible parts inside the box of half-side
    ``36/224·S`` around the arg-max pixel; consistent iff some part is covered in ≥ 80 % of the
    images where it is visible; stability = fraction of images whose coverage row is unchanged
    under noise. Returns percentages (``consistency`` of prototypes, mean ``stability``).
    """
    m = model.num_prototypes
    starts = np.searchsorted(clean.proto, np.arange(m + 1))
    consistent: list[bool] = []
    stable: list[float] = []
    if noisy is not None and not (np.array_equal(noisy.proto, clean.proto)
                                  and np.array_equal(noisy.image, clean.image)):
        raise RuntimeError("clean and noisy arg-max pairs differ")  # same labels and identity: a bug
    for j in range(m):
        lo, hi = starts[j], starts[j + 1]
        imgs = clean.image[lo:hi]
        pts = parts[imgs]
        cov = part_coverage(clean.xy[lo:hi], pts, image_size)
        consistent.append(prototype_consistency(cov, pts[:, :, 2] > 0))
        if noisy is not None:
            stable.append(stability(cov, part_coverage(noisy.xy[lo:hi], pts, image_size)))
    out: dict[str, float | None] = {"consistency": consistency_score(consistent)}
    if noisy is not None:
        out["stability"] = stability_score(stable) if not all(math.isnan(s) for s in stable) else None
    return out


def metric_report(acts: dict[str, Activations], teacher: str, *, metrics: Sequence[str], taus: Sequence[float],
                  fidelity: str = "paper", models: dict[str, ProtoPNet] | None = None,
                  class_names: list[str] | None = None, cache: ActivationCache | None = None,
                  cache_ids: dict[str, str] | None = None, notes: list[str] | None = None) -> dict[str, Any]:
    """Every requested metric of every model from its arrays, in the JSON shape.

    Args:
        acts: row name → :class:`Activations` (same images, same order); ``teacher`` is one key.
        metrics: subset of :data:`~p2p_cli.evaluation.options.ALL_METRICS` (``consistency`` and
            ``stability`` are added by the caller, who has the part annotations).
        taus: thresholds τ (``math.inf`` allowed).
        models: row name → model, needed for ``explanation`` and ``sparsity``.
        cache, cache_ids: optional PMS cache (row name → activation key id).

    Returns:
        ``{"taus": [...], "teacher": NAME, "models": {NAME: {"acc", "aap": {τ: v}, "ajs": {τ: v},
        "pms", ...}}}`` with τ keys from :func:`tau_key`. AJS/PMS of a model whose grid differs
        from the teacher's are ``None`` (explained in ``notes``).
    """
    notes = notes if notes is not None else []
    t_acts = acts[teacher]
    n_img = t_acts.labels.shape[0]
    out: dict[str, Any] = {"taus": [tau_key(t) for t in taus], "teacher": teacher, "models": {}}
    for name, a in acts.items():
        if a.labels.shape[0] != n_img or not np.array_equal(a.labels, t_acts.labels):
            raise P2PError(f"'{name}' and '{teacher}' were evaluated on different images")
        row: dict[str, Any] = {"num_prototypes": int(a.argmin.shape[1]), "grid": list(a.grid)}
        if "acc" in metrics:
            row["acc"] = accuracy(a.logits, a.labels)
            k = a.logits.shape[1]
            pca = per_class_accuracy(a.logits, a.labels, k)
            names = class_names if class_names and len(class_names) == k else [str(i) for i in range(k)]
            row["per_class_acc"] = {c: _finite(v) for c, v in zip(names, pca.tolist(), strict=True)}
            row["confusion"] = confusion_matrix(a.logits, a.labels, k).tolist()
        if "aap" in metrics:
            row["aap"] = {tau_key(t): aap(a.argmin, a.min_dist, t, a.num_locations) for t in taus}
        same_grid = tuple(a.grid) == tuple(t_acts.grid)
        if not same_grid and ("ajs" in metrics or "pms" in metrics):
            notes.append(f"'{name}' has a {a.grid[0]}×{a.grid[1]} grid but the teacher "
                         f"{t_acts.grid[0]}×{t_acts.grid[1]}: AJS and PMS are undefined (shown as –)")
        if "ajs" in metrics:
            row["ajs"] = {tau_key(t): (ajs(t_acts.argmin, t_acts.min_dist, a.argmin, a.min_dist, t,
                                            t_acts.num_locations, fidelity=fidelity) if same_grid else None)
                          for t in taus}
        if "pms" in metrics:
            if same_grid:
                ids = cache_ids or {}
                cname = f"pms-{ids[teacher]}-{ids[name]}.json" if teacher in ids and name in ids else None
                entry = _pms_entry(t_acts, a, cache, cname)
                row["pms"] = float(entry["score"])
                row["pms_per_k"] = [float(v) for v in entry["per_k"]]
                row["pms_caps"] = [int(v) for v in entry["m_values"]]
                row["pms_matched"] = int(entry["num_matched"])
                if a.argmin.shape[1] != t_acts.argmin.shape[1]:
                    notes.append(f"PMS of '{name}' matches min(mT, mS) = {entry['num_matched']} prototype pairs "
                                 f"(teacher {t_acts.argmin.shape[1]}, '{name}' {a.argmin.shape[1]} prototypes); "
                                 "the surplus prototypes of the larger model are ignored")
            else:
                row["pms"] = None
        model = (models or {}).get(name)
        if model is not None and hasattr(model, "predictions") and "acc" in metrics:
            row["tree"] = tree_modes(model, a)
        if model is not None and not hasattr(model, "last_layer"):
            if "explanation" in metrics or "sparsity" in metrics:
                notes.append(f"'{name}' is a {model.arch}: explanation size and last-layer sparsity are "
                             "ProtoPNet measures (shown as –)")
            model = None
        if "explanation" in metrics and model is not None:
            sims = np.log((a.min_dist.astype(np.float64) + 1.0) / (a.min_dist.astype(np.float64) + 1e-4))
            row["explanation_size"] = explanation_size(sims, model.last_layer.weight.detach().cpu().numpy(), a.logits)
        if "sparsity" in metrics and model is not None:
            row["sparsity"] = last_layer_sparsity(model.last_layer.weight.detach().cpu().numpy(),
                                                  model.class_identity.detach().cpu().numpy())
        out["models"][name] = row
    return out


def tree_modes(model: torch.nn.Module, a: Activations) -> dict[str, Any]:
    """A ProtoTree's three inference modes (distributed = soft, sample-max, greedy) from the
    min distances: accuracy, and fidelity = agreement with the soft tree's prediction."""
    with torch.no_grad():
        preds = model.predictions(torch.from_numpy(a.min_dist).float())
    labels = torch.from_numpy(a.labels).long()
    soft = preds["distributed"]
    n = max(len(labels), 1)
    return {"leaves": int(model.num_leaves), "depth": int(model.config.depth),
            "modes": {mode: {"acc": float((p == labels).sum()) / n, "fidelity": float((p == soft).sum()) / n}
                      for mode, p in preds.items()}}


def chance_level(t_acts: Activations, taus: Sequence[float], fidelity: str, seed: int) -> dict[str, Any]:
    """AJS and PMS of the teacher against itself on shuffled images (a seeded permutation):
    what two unrelated explainers with the teacher's statistics would score."""
    perm = np.random.default_rng(seed).permutation(t_acts.labels.shape[0])
    sh_arg, sh_dist = t_acts.argmin[perm], t_acts.min_dist[perm]
    return {
        "ajs": {tau_key(t): ajs(t_acts.argmin, t_acts.min_dist, sh_arg, sh_dist, t, t_acts.num_locations,
                                fidelity=fidelity) for t in taus},
        "pms": pms(t_acts.argmin, sh_arg, t_acts.num_locations).score,
        "seed": seed,
    }


def headline_tau(t_acts: Activations, taus: Sequence[float]) -> tuple[float, str]:
    """The τ for the summary table: the smallest listed τ at which the teacher has at least one
    active patch in ≥ 90 % of the images (below it, AJS is dominated by images where neither
    model has an active patch, which count 1 by definition)."""
    for t in sorted(taus):
        frac = float(active_mask(t_acts.argmin, t_acts.min_dist, t, t_acts.num_locations).any(axis=1).mean())
        if frac >= ACTIVE_IMAGE_FRACTION:
            return t, (f"headline τ = {tau_key(t)}: the smallest τ at which the teacher has an active patch in "
                       f"≥ {ACTIVE_IMAGE_FRACTION:.0%} of the images ({frac:.0%}); at smaller τ AJS mostly counts "
                       "images where neither model has one")
    t = max(taus)
    return t, f"headline τ = {tau_key(t)} (the largest listed)"


def add_deltas(report: dict[str, Any], baseline: str | None) -> None:
    """``delta`` per non-teacher, non-baseline model: value minus the baseline's (the Δ of
    Proto2Proto's Table 2), per τ for AAP and AJS; ``None`` where either value is missing."""
    if baseline is None or baseline not in report["models"]:
        return
    base = report["models"][baseline]
    for name, row in report["models"].items():
        if name in (baseline, report["teacher"]):
            continue
        delta: dict[str, Any] = {}
        for key in ("acc", "pms", "consistency", "stability", "explanation_size", "sparsity"):
            if isinstance(row.get(key), float) and isinstance(base.get(key), float):
                delta[key] = row[key] - base[key]
        for key in ("aap", "ajs"):
            if isinstance(row.get(key), dict) and isinstance(base.get(key), dict):
                delta[key] = {t: (v - base[key][t] if v is not None and base[key].get(t) is not None else None)
                              for t, v in row[key].items()}
        row["delta"] = delta
