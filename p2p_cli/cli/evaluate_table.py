"""The console tables of ``p2p evaluate`` (and quickstart): the paper's Table 2 shape, then
AAP and AJS at every τ, ProtoTree inference modes, the extras and the notes."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from p2p_cli.evaluation.options import DEFAULT_METRICS

__all__ = ["print_report"]


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
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
    metrics = report.get("metrics", list(DEFAULT_METRICS))
    h = report.get("headline_tau", report["taus"][-1])
    title = (f"{report['dataset']['name']} {report['split']} split: {report['num_images']} images, "
             f"{report['grid'][0]}×{report['grid'][1]} grid, fidelity {report['fidelity']}")
    table = Table(title=title, title_justify="left")
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
    for i, c in enumerate(cols):
        table.add_column(c, justify="left" if i < 3 else "right", no_wrap=i < 3)
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
        table.add_row(*cells)
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
        table.add_row(*cells, style="dim")
    console.print(table)
    trees = {name: row["tree"] for name, row in report["models"].items() if row.get("tree")}
    if trees:
        t3 = Table(title="ProtoTree inference modes: accuracy (fidelity to the distributed tree)",
                   title_justify="left")
        for c in ("model", "leaves", "distributed", "sample-max", "greedy"):
            t3.add_column(c, justify="left" if c == "model" else "right")
        for name, tr in trees.items():
            modes = tr["modes"]
            t3.add_row(name, str(tr["leaves"]),
                       *(f"{modes[k]['acc']:.3f} ({modes[k]['fidelity']:.3f})"
                         for k in ("distributed", "sample_max", "greedy")))
        console.print(t3)
    if len(report["taus"]) > 1:
        for metric, label, digits in (("aap", "AAP(τ): distinct active patches per image", 2),
                                      ("ajs", "AJS(τ) with the teacher ↑", 3)):
            if metric not in metrics:
                continue
            t2 = Table(title=label, title_justify="left")
            t2.add_column("model")
            for t in report["taus"]:
                t2.add_column(f"τ={t}", justify="right")
            for name, row in report["models"].items():
                d = row.get("delta", {}).get(metric, {})
                t2.add_row(name, *(_cell(row[metric][t], d.get(t), digits) for t in report["taus"]))
            if metric == "ajs" and "chance" in report:
                t2.add_row("chance", *(_cell(report["chance"]["ajs"][t]) for t in report["taus"]), style="dim")
            console.print(t2)
    base = report.get("baseline")
    lines = [report.get("headline_reason", "")]
    if base:
        lines.append(f"(±x) = difference to the baseline '{base}'")
    lines += report.get("notes", [])
    for line in lines:
        if line:
            console.print(f"• {line}", style="dim", soft_wrap=True, markup=False)
