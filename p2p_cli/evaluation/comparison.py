"""Did interpretability transfer? The quickstart's verdict and its statistics over seeds.

Both read an ``evaluate`` report (``report["models"][run]`` rows with ``acc``, ``aap[τ]``,
``ajs[τ]`` and ``pms``, τ as its string key). The claim tested is Proto2Proto's (Keswani et al.,
CVPR 2022, Table 2): a student distilled with L_global and L_ppc (Eq. 4-5) reasons more like its
teacher — higher AJS (Eq. 8) and PMS (Algorithm 1) — than a baseline student trained alone, at no
loss of accuracy.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any


def verdict(report: dict[str, Any], tau: str, *, baseline: str = "baseline", student: str = "proto2proto",
            teacher: str = "teacher") -> dict[str, Any]:
    """Compare ``student`` with ``baseline`` at the threshold ``tau``.

    ``transferred`` ⇔ the student's AJS(τ) and PMS are both above the baseline's;
    ``accuracy_not_lower`` ⇔ its accuracy is at least the baseline's. ``text`` says so in words.
    """
    b, p, t = report["models"][baseline], report["models"][student], report["models"][teacher]
    ajs_up = p["ajs"][tau] > b["ajs"][tau]
    pms_up = p["pms"] > b["pms"]
    acc_ok = p["acc"] >= b["acc"]
    transferred = ajs_up and pms_up
    parts = [
        f"At τ = {tau}, the Proto2Proto student's active patches overlap the teacher's with AJS {p['ajs'][tau]:.3f} "
        f"against {b['ajs'][tau]:.3f} for the baseline student ({p['ajs'][tau] - b['ajs'][tau]:+.3f}), and its "
        f"prototypes match the teacher's with PMS {p['pms']:.3f} against {b['pms']:.3f} "
        f"({p['pms'] - b['pms']:+.3f}).",
        f"Test accuracy: Proto2Proto {p['acc']:.3f}, baseline {b['acc']:.3f}, teacher {t['acc']:.3f}.",
    ]
    if transferred and acc_ok:
        parts.append("Interpretability transferred: the distilled student reasons more like its teacher than the "
                     "baseline does, at no loss of accuracy — the paper's main claim holds on this data.")
    elif transferred:
        parts.append("Interpretability transferred (AJS and PMS are higher), but at lower accuracy than the "
                     "baseline, so the paper's claim holds only in part here.")
    else:
        which = " and ".join(n for n, up in (("AJS", ajs_up), ("PMS", pms_up)) if not up)
        parts.append(f"Interpretability did not transfer on {which}: the paper's claim is not reproduced by "
                     "this run.")
    return {"transferred": transferred, "accuracy_not_lower": acc_ok, "ajs_higher": ajs_up, "pms_higher": pms_up,
            "tau": tau, "text": " ".join(parts)}


def seed_statistics(reports: Sequence[dict[str, Any]], tau: str, roles: Sequence[str],
                    run_name: Callable[[str, int], str]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean, sample std and count over seeds of acc, AAP(τ), AJS(τ) and PMS per role.

    ``reports[k]`` is seed k's report; role r's row in it is ``run_name(r, k)`` (absent rows are
    skipped). One seed gives std 0.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for role in roles:
        values: dict[str, list[float]] = {"acc": [], "aap": [], "ajs": [], "pms": []}
        for k, rep in enumerate(reports):
            row = rep["models"].get(run_name(role, k))
            if row is None:
                continue
            values["acc"].append(row["acc"])
            values["aap"].append(row["aap"][tau])
            values["ajs"].append(row["ajs"][tau])
            values["pms"].append(row["pms"])
        out[role] = {key: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
                           "n": len(v)} for key, v in values.items() if v}
    return out
