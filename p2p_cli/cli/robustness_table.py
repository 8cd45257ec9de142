"""Console tables of a ``p2p robustness`` report (:func:`p2p_cli.workflows.robustness.run_robustness`):
the head-on-stomach table (Hoffmann et al. 2021, §3), the transfer table of the teacher's
adversarial images shown to its students, or the JPEG table (§4, App. D.2)."""

from __future__ import annotations

import math
from typing import Any


def _fmt(v: Any, percent: bool = False, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if percent:
        return f"{100 * v:.1f}%"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def print_report(report: dict[str, Any], console: Any = None) -> None:
    """Rich tables of a :func:`~p2p_cli.workflows.robustness.run_robustness` report on ``console`` (default: stdout)."""
    from p2p_cli.runtime.reporter import make_console, print_fitted

    console = console or make_console()
    models = report["models"]
    s = report.get("settings", {})
    if report["attack"] == "head-on-stomach":
        title = (f"head on stomach: ε = {s['eps'] * 255:.3g}/255, step {s['step'] * 255:.3g}/255, {s['iters']} steps, "
                 f"top-{s['top_k']}, region {s['region']} ({report['dataset']}, {report['precision']})")
        cols = ["model", "attacked", "success rate", "clean acc", f"adv acc (PGD-{s['adv_iters']})",
                "still correct", "sim clean", "sim new", "shift", "steps", "seconds"]
        rows = [[name, str(e["attacked"]), _fmt(e["success_rate"], True), _fmt(e["clean_acc"], True),
                 _fmt(e["adv_acc"], True), _fmt(e["still_correct"], True), _fmt(e["sim_clean"]),
                 _fmt(e["sim_new"]), _fmt(e["shift"]), _fmt(e["steps_success"], digits=1),
                 _fmt(e["seconds"], digits=1)] for name, e in models.items()]
        print_fitted(console, title, cols, rows)
        teacher = report.get("teacher")
        if teacher and models[teacher].get("transfer"):
            cols = ["student", "teacher moved", "student moved | teacher moved", "student moved (all)",
                    "student, random noise", "teacher, random noise"]
            rows = [[name, f"{e['teacher_moved']}/{e['attacked']}", _fmt(e["transfer_rate"], True),
                     _fmt(e["student_moved"], True), _fmt(e["student_moved_random"], True),
                     _fmt(e["teacher_moved_random"], True)] for name, e in models[teacher]["transfer"].items()]
            print_fitted(console, f"transfer: the teacher '{teacher}''s adversarial images shown to its students "
                         "(same prototype index)", cols, rows)
    else:
        title = (f"JPEG quality {s['quality']}: clean vs compressed test images ({report['dataset']}, "
                 f"{report['precision']})")
        cols = ["model", "images", "acc clean", "acc JPEG", "top sim clean", "top sim JPEG", "ρ mean", "ρ median",
                "top-1 changed", f"top-{s['top_k']} changed", f"top-{s['top_k']} overlap", "location moved"]
        rows = [[name, str(e["images"]), _fmt(e["acc_clean"], True), _fmt(e["acc_jpeg"], True),
                 _fmt(e["top_sim_clean"]), _fmt(e["top_sim_jpeg"]), _fmt(e["rho_mean"]), _fmt(e["rho_median"]),
                 _fmt(e["top1_changed"], True), _fmt(e["topk_changed"], True), _fmt(e["topk_overlap"]),
                 _fmt(e["location_moved"], True)] for name, e in models.items()]
        print_fitted(console, title, cols, rows)
    for path in report.get("figures", []):
        console.print(f"wrote {path}")
