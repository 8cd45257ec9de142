"""The console tables of ``p2p evaluate`` (and quickstart): the paper's Table 2 shape, then
AAP and AJS at every τ, ProtoTree inference modes, the extras and the notes."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from p2p_cli.evaluation.options import DEFAULT_METRICS
from p2p_cli.runtime.reporter import make_console, print_fitted

__all__ = ["print_groups", "print_report"]


def _cell(value: Any, delta: Any = None, digits: int = 3, percent: bool = False) -> str:
    if value is None:
        return "–"
    text = f"{value:.1f}" if percent else f"{value:.{digits}f}"
    if isinstance(delta, float):
        text += f" ({delta:+.1f})" if percent else f" ({delta:+.{digits}f})"
    return text


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    """Print the paper's Table 2 shape (teacher, baseline, students with Δ vs the baseline), then
    AAP and AJS at every τ, the extras, and the notes."""
    console = console or make_console()
    metrics = report.get("metrics", list(DEFAULT_METRICS))
    h = report.get("headline_tau", report["taus"][-1])
    title = (f"{report['dataset']['name']} {report['split']} split: {report['num_images']} images, "
             f"{report['grid'][0]}×{report['grid'][1]} grid, fidelity {report['fidelity']}")
    cols = ["model", "role", "backbone", "m"]
    if "aap" in metrics:
        cols.append(f"AAP τ={h}")
    if "ajs" in metrics:
        cols.append(f"AJS τ={h} ↑")
    if "pms" in metrics:
        cols.append("PMS ↑")
    if "acc" in metrics:
        cols.append("acc ↑")
    extras = [("consistency", "consist. % ↑", True), ("stability", "stab. % ↑", True),
              ("explanation_size", "expl. size", False), ("sparsity", "sparsity ↑", False)]
    extras = [e for e in extras if any(e[0] in r for r in report["models"].values())]
    cols += [e[1] for e in extras]
    rows: list[list[str]] = []
    styles: list[str | None] = []
    for name, row in report["models"].items():
        d = row.get("delta", {})
        role = f"{row['method']} student" if row["role"] == "student" and row.get("method") else row["role"]
        cells = [name, role, row.get("backbone", ""), str(row.get("num_prototypes", ""))]
        if "aap" in metrics:
            cells.append(_cell(row["aap"][h], d.get("aap", {}).get(h), 2))
        if "ajs" in metrics:
            cells.append(_cell(row["ajs"][h], d.get("ajs", {}).get(h)))
        if "pms" in metrics:
            cells.append(_cell(row.get("pms"), d.get("pms")))
        if "acc" in metrics:
            cells.append(_cell(row.get("acc"), d.get("acc")))
        for key, _, pct in extras:
            cells.append(_cell(row.get(key), d.get(key), 2, percent=pct))
        rows.append(cells)
        styles.append(None)
    if "chance" in report:
        ch = report["chance"]
        cells = ["chance", "shuffled teacher", "", ""]
        if "aap" in metrics:
            cells.append("")
        if "ajs" in metrics:
            cells.append(_cell(ch["ajs"][h]))
        if "pms" in metrics:
            cells.append(_cell(ch["pms"]))
        cells += [""] * (len(cols) - len(cells))
        rows.append(cells)
        styles.append("dim")
    print_fitted(console, title, cols, rows, keys=1, left=3, styles=styles)
    trees = {name: row["tree"] for name, row in report["models"].items() if row.get("tree")}
    if trees:
        t3 = [[name, str(tr["leaves"]), *(f"{tr['modes'][k]['acc']:.3f} ({tr['modes'][k]['fidelity']:.3f})"
                                          for k in ("distributed", "sample_max", "greedy"))]
              for name, tr in trees.items()]
        print_fitted(console, "ProtoTree inference modes: accuracy (fidelity to the distributed tree)",
                     ["model", "leaves", "distributed", "sample-max", "greedy"], t3)
    if len(report["taus"]) > 1:
        for metric, label, digits in (("aap", "AAP(τ): distinct active patches per image", 2),
                                      ("ajs", "AJS(τ) with the teacher ↑", 3)):
            if metric not in metrics:
                continue
            t2 = [[name, *(_cell(row[metric][t], row.get("delta", {}).get(metric, {}).get(t), digits)
                           for t in report["taus"])] for name, row in report["models"].items()]
            t2_styles: list[str | None] = [None] * len(t2)
            if metric == "ajs" and "chance" in report:
                t2.append(["chance", *(_cell(report["chance"]["ajs"][t]) for t in report["taus"])])
                t2_styles.append("dim")
            print_fitted(console, label, ["model", *(f"τ={t}" for t in report["taus"])], t2, styles=t2_styles)
    base = report.get("baseline")
    lines = [report.get("headline_reason", "")]
    if base:
        lines.append(f"(±x) = difference to the baseline '{base}'")
    lines += report.get("notes", [])
    for line in lines:
        if line:
            console.print(f"• {line}", style="dim", markup=False)


def print_groups(result: dict[str, Any], console: Console | None = None) -> None:
    """Print the evaluation of a whole workdir: one heading and :func:`print_report` per teacher."""
    console = console or make_console()
    for group in result["groups"]:
        if "error" in group:
            console.print(f"teacher {group['teacher']}: not evaluated: {group['error']}", markup=False)
            continue
        students = [n for n in group["models"] if n != group["teacher"]]
        listing = f" and its students {', '.join(students)}" if students else " (no student distilled from it)"
        console.print(f"\n[bold]teacher {group['teacher']}[/]{listing}")
        print_report(group, console)
