"""The quickstart report: ``report.md`` and a self-contained ``report.html`` from the report dict.

Layout follows the paper: Table 2 (teacher / baseline / Proto2Proto with Δ vs the baseline),
Table 3 (the pruned student), Table 4 (ablations, when run), Figures 1 and 4, training curves,
and the verdict computed from the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from p2p_cli.io.atomic import atomic_write_bytes, atomic_write_text
from p2p_cli.viz import html
from p2p_cli.viz.curves import plot_training_curves

MAIN_ROWS = (("teacher", "Teacher"), ("baseline", "Baseline student"), ("proto2proto", "Proto2Proto student (KD)"))


def _f(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _d(value: Any, digits: int = 3) -> str:
    return "" if value is None else f" ({value:+.{digits}f})"


def metric_rows(report: Mapping[str, Any], names: Sequence[tuple[str, str]], tau: str) -> list[list[str]]:
    """Rows: label, run, backbone, prototypes, AAP(τ), AJS(τ), PMS, accuracy — with Δ vs the baseline."""
    rows = []
    for name, label in names:
        row = report["models"].get(name)
        if row is None:
            continue
        delta = row.get("delta") or {}
        rows.append([label, name, str(row.get("backbone", "")), str(row.get("num_prototypes", "")),
                     _f(row["aap"][tau], 2) + _d((delta.get("aap") or {}).get(tau), 2),
                     _f(row["ajs"][tau]) + _d((delta.get("ajs") or {}).get(tau)),
                     _f(row["pms"]) + _d(delta.get("pms")),
                     _f(row["acc"]) + _d(delta.get("acc"))])
    return rows


COLUMNS = ["model", "run", "backbone", "prototypes", "AAP(τ)", "AJS(τ) ↑", "PMS ↑", "accuracy ↑"]


def extra_rows(report: Mapping[str, Any], names: Sequence[str]) -> list[list[str]]:
    """Beyond the paper: consistency, stability (%), explanation size, last-layer sparsity."""
    rows = []
    for name in names:
        row = report["models"].get(name)
        if row is None:
            continue
        rows.append([name, _f(row.get("consistency"), 1), _f(row.get("stability"), 1),
                     _f(row.get("explanation_size"), 1), _f(row.get("sparsity"))])
    return rows


def ajs_by_tau(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    cols = ["run"] + [f"AJS τ={t}" for t in report["taus"]]
    rows = [[name] + [_f(row["ajs"].get(t)) for t in report["taus"]] for name, row in report["models"].items()]
    return cols, rows


def seed_rows(stats: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[list[str]]:
    rows = []
    for role, label in MAIN_ROWS:
        s = stats.get(role, {})
        rows.append([label] + [f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}" if k in s else "–"
                               for k in ("aap", "ajs", "pms", "acc")])
    return rows


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(out: Path, report: dict[str, Any], curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict:
    """Write ``out/report.md``, ``out/report.html`` and ``out/figures/training-curves.png``."""
    out.mkdir(parents=True, exist_ok=True)
    tau = report["headline_tau_key"]
    curves_png = plot_training_curves(curves)
    atomic_write_bytes(out / "figures" / "training-curves.png", curves_png)
    main = metric_rows(report, MAIN_ROWS, tau)
    pruned = metric_rows(report, (("baseline", "Baseline student"), ("proto2proto-pruned",
                                                                     "Proto2Proto student + ProtoPShare")), tau)
    ablations = report.get("ablations") or []
    ablation = metric_rows(report, [("proto2proto", "L_ppnet + L_ppc + L_global (full, teacher's head copied)")]
                           + [(a["run"], a["losses"]) for a in ablations], tau) if ablations else []
    extras = extra_rows(report, list(report["models"]))
    extra_cols = ["run", "consistency %", "stability %", "explanation size", "last-layer sparsity"]
    ajs_cols, ajs_rows = ajs_by_tau(report)
    verdict = report["verdict"]["text"]
    timings = report.get("timings", {}).get("seconds", {})
    time_line = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    notes = [report.get("headline_reason", "")] + list(report.get("notes", []))
    chance = report.get("chance")
    if chance:
        notes.append(f"chance level (the teacher against itself on shuffled images): AJS(τ={tau}) "
                     f"{chance['ajs'].get(tau, float('nan')):.3f}, PMS {chance['pms']:.3f}")
    figures = report.get("figures", [])

    md = [f"# p2p quickstart report ({report.get('preset', '')} preset)", "",
          f"Dataset: {report['dataset']['name']}, {report['num_images']} test images. Headline τ = {tau}.", "",
          "## Verdict", "", verdict, "",
          "## Interpretability transfer (paper Table 2)", "", _md_table(COLUMNS, main), "",
          "## Pruning (paper Table 3)", "", _md_table(COLUMNS, pruned), ""]
    if ablation:
        md += ["## Ablations (paper Table 4)", "", _md_table(COLUMNS, ablation), ""]
    if report.get("seeds"):
        stats = report["seeds"]["statistics"]
        md += [f"## Over {report['seeds']['n']} seeds (mean ± std)", "",
               _md_table(["model", "AAP(τ)", "AJS(τ)", "PMS", "accuracy"], seed_rows(stats)), ""]
    md += ["## AJS at every τ", "", _md_table(ajs_cols, ajs_rows), "",
           "## Beyond the paper", "", _md_table(extra_cols, extras), "",
           "## Notes", ""] + [f"- {n}" for n in notes if n] + [""]
    md += ["## Figures", "", "Training curves: ![training curves](figures/training-curves.png)", ""]
    for i, fig in enumerate(figures, 1):
        for kind in ("explanation", "gallery"):
            if kind in fig["files"]:
                rel = Path(fig["files"][kind]).relative_to(out)
                md.append(f"- image {i} {kind}: ![{kind} {i}]({rel})")
    md += ["", f"Timings: {time_line}", ""]
    atomic_write_text(out / "report.md", "\n".join(md))

    page = html.Page(f"p2p quickstart report ({report.get('preset', '')} preset)",
                     f"{report['dataset']['name']}, {report['num_images']} test images, headline τ = {tau}; "
                     f"{time_line}")
    page.heading("Verdict")
    page.paragraph(verdict)
    for title, cols, rows in (("Interpretability transfer (paper Table 2)", COLUMNS, main),
                              ("Pruning (paper Table 3)", COLUMNS, pruned),
                              ("Ablations (paper Table 4)", COLUMNS, ablation)):
        if rows:
            page.heading(title)
            page.table(html.Table(list(cols), [list(r) for r in rows]))
    if report.get("seeds"):
        page.heading(f"Over {report['seeds']['n']} seeds (mean ± std)")
        page.table(html.Table(["model", "AAP(τ)", "AJS(τ)", "PMS", "accuracy"], seed_rows(
            report["seeds"]["statistics"])))
    page.heading("Explanations (paper Figures 1 and 4)")
    for i, fig in enumerate(figures, 1):
        for kind, caption in (("explanation", "top-5 prototypes of teacher, baseline and Proto2Proto student"),
                              ("gallery", "teacher prototypes beside their Hungarian-matched student prototypes")):
            if kind in fig["files"]:
                where = "/".join(Path(fig["image"]).parts[-2:])  # class folder / file: names repeat across classes
                page.image(html.Image(Path(fig["files"][kind]).read_bytes(), f"{kind} {i}",
                                      f"Image {i} ({where}): {caption}"))
    page.heading("Training curves")
    page.image(html.Image(curves_png, "training curves", "loss terms and accuracy per epoch; ★ = final "
                                                           "(pushed, last layer tuned) test accuracy"))
    page.heading("AJS at every τ")
    page.table(html.Table(ajs_cols, ajs_rows))
    page.heading("Beyond the paper")
    page.table(html.Table(extra_cols, extras))
    page.heading("Notes")
    for n in notes:
        if n:
            page.paragraph(n)
    atomic_write_text(out / "report.html", page.render())
    return {"md": out / "report.md", "html": out / "report.html"}
