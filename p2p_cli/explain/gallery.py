"""The matched-prototype gallery (Proto2Proto, Keswani et al., CVPR 2022, Fig. 4): teacher
prototypes of one class, each beside the student prototypes the Hungarian algorithm pairs with
it (:mod:`p2p_cli.explain.matching`), as a figure, an HTML table and a JSON record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2p_cli.explain.matching import Matching, prototype_classes
from p2p_cli.explain.sources import SourceCache, source_images
from p2p_cli.models.runs import LoadedRun
from p2p_cli.viz import figures, html, render
from p2p_cli.viz.explanation import display_name


@dataclass
class Gallery:
    png: bytes
    table: html.Table
    json: dict[str, Any]


def draw_gallery(teacher: LoadedRun, students: list[LoadedRun], matchings: list[Matching], rows: list[int], c: int,
                 n_images: int, cache: SourceCache, long_side: int) -> Gallery:
    """One column per model, one row per teacher prototype in ``rows`` (of class ``c``); a student
    cell shows the matched prototype and on how many of the ``n_images`` test images both find
    their closest patch at the same grid cell."""
    cname = display_name(teacher.classes[c])
    columns = [figures.Column(title=teacher.label, cells=[], header_lines=[f"teacher · class {cname}",
                                                                           f"{len(rows)} prototypes"])]
    for s, mt in zip(students, matchings, strict=True):
        columns.append(figures.Column(title=s.label, cells=[], header_lines=[
            f"PMS {mt.pms:.3f} vs {teacher.name}", "prototypes matched by the Hungarian algorithm"]))
    table = html.Table(["teacher prototype"] + [f"{s.name} prototype" for s in students]
                       + [f"{s.name} co-occurrence" for s in students])
    pairs_json: list[dict[str, Any]] = [{"name": s.name, "pms": mt.pms, "pairs": []}
                                        for s, mt in zip(students, matchings, strict=True)]
    for j in rows:
        big, patch, _ = source_images(cache, teacher, j, long_side)
        rec = teacher.record(j) or {}
        src_label = (rec.get("source") or {}).get("label")
        columns[0].cells.append(figures.Cell(
            left=big, right=patch, title=f"prototype {j}", subtitle=f"of class {cname}",
            fields=[("source image", str((rec.get("source") or {}).get("index", "–")))],
            note=f"source image of class {display_name(src_label)}"
            if src_label and src_label != teacher.classes[c] else ""))
        row: list[object] = [j]
        fracs: list[object] = []
        for si, (s, mt) in enumerate(zip(students, matchings, strict=True)):
            js = mt.pairs.get(j)
            if js is None:
                ph = render.placeholder((long_side, long_side), "not matched")
                columns[si + 1].cells.append(figures.Cell(ph, ph, "no match"))
                row.append("–")
                fracs.append(None)
                continue
            count = int(mt.cooccurrence[j, js])
            sbig, spatch, _ = source_images(cache, s, js, long_side)
            s_classes = prototype_classes(s, js)
            columns[si + 1].cells.append(figures.Cell(
                left=sbig, right=spatch, title=f"prototype {js}  ↔  T{j}",
                subtitle="of class " + (", ".join(display_name(s.classes[k]) for k in s_classes) or "none"),
                fields=[("same location", f"{count / n_images:.0%}"), ("test images", f"{count}/{n_images}")],
                highlight=c not in s_classes))
            row.append(js)
            fracs.append(round(count / n_images, 3))
            pairs_json[si]["pairs"].append({"teacher": j, "student": js, "cooccurrence": count})
        table.rows.append(row + fracs)
    png = figures.panel_figure(columns, title=f"Matched prototypes — class {cname}",
                               left_label="source image (box: 95th pct.)", right_label="prototype patch",
                               subtitle=f"student prototypes matched to the teacher's by the Hungarian algorithm on "
                                        f"PMS co-occurrence over {n_images} test images")
    return Gallery(png, table, {"teacher": teacher.name, "class": teacher.classes[c], "n_images": n_images,
                                "students": pairs_json})
