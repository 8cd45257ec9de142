"""``p2p visualize``: the explanation figure (Proto2Proto Fig. 1), the matched-prototype gallery
(Fig. 4) and a self-contained HTML page, from trained runs and one image.

Model side: :mod:`p2p_cli.explain.local`. Pixels and layout: :mod:`p2p_cli.viz`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from p2p_cli.data.datasets import DatasetIndex, Sample
from p2p_cli.data.loaders import load_dataset_index
from p2p_cli.errors import P2PError
from p2p_cli.explain.local import (
    Explanation,
    Matching,
    ModelBundle,
    SourceCache,
    activation,
    class_index,
    default_model_runs,
    display_image,
    display_name,
    explain,
    find_sample,
    load_bundle,
    match_prototypes,
    model_input,
    part_boxes,
    read_image,
    sample_region,
    tree_path,
)
from p2p_cli.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.viz import figures, html, render
from p2p_cli.viz.tree import tree_figure
from p2p_cli.workflows.evaluate import base_activations

DISPLAY_MIN = 224  # display images: longer side max(224, S) px


@dataclass
class VisualizeRequest:
    image: Path | None
    models: list[str]
    workdir: Path
    out: Path | None
    top_k: int = 5
    class_name: str | None = None
    prototypes: bool = False
    show_parts: bool = False
    gallery_rows: int = 10
    json_path: Path | None = None


@dataclass
class VisualizeResult:
    out: Path
    files: dict[str, Path]
    summary: dict[str, Any]
    lines: list[str] = field(default_factory=list)


@dataclass
class _Scene:
    """Per model: the region of the image it sees, its display image and its explanation."""

    bundle: ModelBundle
    region: tuple[float, float, float, float]
    display: np.ndarray
    explanation: Explanation


def _teacher_first(bundles: list[ModelBundle]) -> list[ModelBundle]:
    """Put the model that the others record as their teacher first (else keep the order)."""
    for b in bundles:
        path = b.run.path.resolve()
        for other in bundles:
            t = other.meta.get("teacher")
            if other is not b and isinstance(t, dict) and (
                    (t.get("path") and Path(str(t["path"])).resolve() == path) or t.get("name") == b.name):
                return [b] + [o for o in bundles if o is not b]
    return bundles


def _boxes_on_display(parts: list[tuple[str, list[float]]], region, display: np.ndarray
                      ) -> list[tuple[str, list[float]]]:
    sx = display.shape[1] / (region[2] - region[0])
    sy = display.shape[0] / (region[3] - region[1])
    return [(name, render.scale_box(box, sx, sy)) for name, box in parts]


def _with_parts(image: np.ndarray, parts: list[tuple[str, list[float]]]) -> np.ndarray:
    for name, box in parts:
        image = render.draw_box(image, box, render.PART_COLOR, width=1, dashed=True, label=name)
    return image


def _source_images(cache: SourceCache, bundle: ModelBundle, j: int, long_side: int
                   ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(source image with its activation box at display size, patch crop, JSON info)."""
    view = cache.view(bundle, j)
    tile = (long_side, long_side)
    if view.image is None or view.activation_box is None:
        ph = render.placeholder(tile, view.problem or "no source")
        return ph, ph, {"problem": (view.problem or "").replace("\n", " ")}
    src = view.image
    patch = render.crop(src, view.activation_box)
    s = long_side / src.shape[1]
    big = render.resize(src, (long_side, round(src.shape[0] * s)))
    rf = view.receptive_field_box
    if rf is not None and (rf[2] - rf[0]) * (rf[3] - rf[1]) < 0.9 * src.shape[0] * src.shape[1]:
        big = render.draw_box(big, render.scale_box(rf, s, s), render.RF_COLOR, 1, dashed=True)
    big = render.draw_box(big, render.scale_box(view.activation_box, s, s), render.BOX_COLOR, 2)
    rec = view.record or {}
    info = {"path": rec.get("source", {}).get("path"), "index": rec.get("source", {}).get("index"),
            "label": rec.get("source", {}).get("label"), "location": rec.get("location"),
            "activation_box": view.activation_box, "receptive_field_box": view.receptive_field_box}
    return big, patch, info


def _fmt(v: float) -> str:
    return f"{v:+.3f}" if abs(v) < 1000 else f"{v:+.1f}"


def visualize(req: VisualizeRequest, rt: Runtime, reporter: Reporter) -> VisualizeResult:
    if req.image is None and not (req.prototypes and req.class_name):
        raise P2PError("give --image IMG (or --prototypes with --class NAME for the gallery alone)")
    if req.top_k < 1:
        raise P2PError(f"--top-k must be >= 1, got {req.top_k}")
    refs = list(req.models) if req.models else [str(r.path) for r in default_model_runs(req.workdir)]
    bundles = [load_bundle(ref, req.workdir, rt) for ref in refs]
    if req.prototypes:
        bundles = _teacher_first(bundles)
    names = [b.name for b in bundles]
    if len(set(names)) != len(names):  # two runs with the same directory name: tell them apart
        for i, b in enumerate(bundles):
            b.name = f"{b.name}#{i + 1}"
    long_side = max(DISPLAY_MIN, max(b.image_size for b in bundles))
    out = req.out or (req.workdir / "visualizations" / (req.image.stem if req.image else f"gallery-{req.class_name}"))
    out.mkdir(parents=True, exist_ok=True)

    # the dataset, for the true label, part annotations, bbox crops and the gallery's test set
    need_index = req.show_parts or req.prototypes or any(b.cfg.crop_bbox for b in bundles)
    index: DatasetIndex | None = None
    try:
        index = load_dataset_index(bundles[0].cfg)
    except P2PError as exc:
        if need_index:
            raise
        reporter.debug(f"dataset of {bundles[0].name} not available ({exc}); no true label shown")
    pil: Image.Image | None = read_image(req.image) if req.image else None
    found: tuple[Sample, str] | None = None
    if pil is not None and index is not None and req.image is not None:
        found = find_sample(index, req.image)
    sample = found[0] if found else None
    true_label = sample.label if sample is not None else None
    if req.show_parts:
        if pil is None:
            raise P2PError("--show-parts needs --image")
        if sample is None:
            raise P2PError(f"--show-parts: {req.image} is not an image of the dataset {index.root if index else ''} "
                           "(part annotations are known only for dataset images)")
        if not sample.parts:
            raise P2PError(f"--show-parts: the dataset at {index.root if index else ''} has no part annotations")

    cache = SourceCache()
    lines: list[str] = []
    files: dict[str, Path] = {}
    summary: dict[str, Any] = {"image": str(req.image) if req.image else None, "models": []}
    page = html.Page("p2p visualize" + (f" — {req.image.name}" if req.image else ""),
                     meta=("image: " + str(req.image) + (f" ({pil.width}×{pil.height} px)" if pil else "")
                           if req.image else "") + f"  ·  models: {', '.join(b.label for b in bundles)}")
    scenes: list[_Scene] = []
    trees = [b for b in bundles if hasattr(b.model, "tree")]  # ProtoTree runs: decision path + tree image
    nets = [b for b in bundles if b not in trees]
    if pil is not None and sample is not None and index is not None:
        summary["true_class"] = index.classes[sample.label]
        summary["split"] = found[1] if found else None
    if trees:
        summary["trees"] = _tree_figures(trees, pil, sample, true_label, cache, long_side, rt, out, files, page, lines)
    if pil is not None and nets:
        columns = []
        for b in nets:
            cls = class_index(req.class_name, b.classes) if req.class_name else None
            region = sample_region(sample, pil, bool(b.cfg.crop_bbox))
            x = model_input(pil, b.image_size, region)
            exp = explain(b.model, x, rt, top_k=req.top_k, class_index=cls)
            disp = display_image(pil, long_side, region)
            scenes.append(_Scene(b, region, disp, exp))
            parts = (_boxes_on_display(part_boxes(index, sample, region), region, disp)
                     if req.show_parts and index is not None and sample is not None else [])
            columns.append(_explanation_column(b, exp, disp, parts, cache, long_side, true_label))
            summary["models"].append(_explanation_json(b, exp, region, disp, cache, long_side))
        subtitle = ("true class: " + display_name(index.classes[true_label])
                    if true_label is not None and index is not None else "image not in the dataset: true class unknown")
        subtitle += ("  ·  explaining class " + display_name(req.class_name)) if req.class_name else \
            "  ·  each model explains its predicted class"
        png = figures.panel_figure(columns, title=f"Why? Top-{req.top_k} prototypes — {req.image.name}",
                                   left_label="where it fires in this image", right_label="prototype (source patch)",
                                   subtitle=subtitle)
        files["explanation"] = out / "explanation.png"
        atomic_write_bytes(files["explanation"], png)
        page.heading("Explanation")
        page.paragraph("For each model: its prediction, then the prototypes that contribute most to the explained "
                       "class (contribution = similarity × last-layer weight). Left: the image with the prototype's "
                       "similarity heat map (colormap inferno, bright = similar) and its 95th-percentile box (cyan); "
                       "right: the training patch the prototype was projected onto."
                       + (" Dashed green boxes: ground-truth parts." if req.show_parts else ""))
        page.image(html.Image(png, "explanation figure", ""))
        for b, scene, col in zip(nets, scenes, columns, strict=True):
            page.heading(b.label, 3)
            page.table(_explanation_table(b, scene.explanation, col))
    if req.prototypes:
        gallery = _gallery(req, bundles, scenes, index, cache, long_side, rt, reporter)
        files["gallery"] = out / "gallery.png"
        atomic_write_bytes(files["gallery"], gallery["png"])
        page.heading("Matched prototypes (teacher ↔ students)")
        page.paragraph("Teacher prototypes of one class beside the student prototypes the Hungarian algorithm "
                       "matches to them on the PMS co-occurrence (images of the test set where both prototypes "
                       "find their closest patch at the same grid cell; Proto2Proto Algorithm 1 and Fig. 4). "
                       "Left: the source image with the prototype's 95th-percentile box (cyan) and receptive field "
                       "(dashed white, drawn when smaller than the image); right: the patch.")
        page.image(html.Image(gallery["png"], "matched prototype gallery"))
        page.table(gallery["table"])
        summary["gallery"] = gallery["json"]
    files["html"] = out / "index.html"
    atomic_write_text(files["html"], page.render())
    summary["files"] = {k: str(v) for k, v in files.items()}
    if req.json_path:
        atomic_write_json(req.json_path, summary)
        files["json"] = req.json_path
    for m in summary["models"]:
        lines.append(f"{m['name']}: predicts {m['predicted']} (p = {m['probability']:.2f}), "
                     f"explains {m['explained']} with prototypes {', '.join(str(t['prototype']) for t in m['top_k'])}")
    if "gallery" in summary:
        for s in summary["gallery"]["students"]:
            lines.append(f"{s['name']}: PMS {s['pms']:.3f} against {summary['gallery']['teacher']}")
    return VisualizeResult(out, files, summary, lines)


# ----------------------------------------------------------------------------- ProtoTree


def _tree_figures(trees: list[ModelBundle], pil: Image.Image | None, sample: Sample | None, true_label: int | None,
                  cache: SourceCache, long_side: int, rt: Runtime, out: Path, files: dict[str, Path],
                  page: html.Page, lines: list[str]) -> list[dict[str, Any]]:
    """Per ProtoTree run: the greedy decision path for the image (when given) and the whole tree."""
    result = []
    for b in trees:
        slug = b.name.replace("#", "-")
        info: dict[str, Any] = {"name": b.name, "run": str(b.run.path), "leaves": b.model.num_leaves,
                                "prototypes": b.model.num_prototypes}
        highlight: set = set()
        if pil is not None:
            region = sample_region(sample, pil, bool(b.cfg.crop_bbox))
            path = tree_path(b.model, model_input(pil, b.image_size, region), rt)
            disp = display_image(pil, long_side, region)
            h, w = disp.shape[:2]
            cells = []
            for i, st in enumerate(path.steps, start=1):
                up, box = activation(st.distance_map, (h, w))
                where = render.draw_box(render.overlay_heatmap(disp, up), box, render.BOX_COLOR, width=2)
                _, patch, _ = _source_images(cache, b, st.prototype, long_side)
                cells.append(figures.Cell(
                    left=where, right=patch, title=f"node {i}: prototype {st.prototype}",
                    subtitle="present → go right" if st.right else "absent → go left",
                    fields=[("distance", f"{st.distance:.3f}"), ("exp(−d)", f"{st.probability:.3f}")],
                    note=f"closest patch at cell ({st.location[0]}, {st.location[1]})"))
                highlight.add(("p", st.prototype))
            highlight.add(("l", path.leaf))
            pred = path.predicted
            verdict, color = "", "black"
            if true_label is not None and true_label < len(b.classes):
                verdict, color = ("✓ ", "#1a7f37") if pred == true_label else ("✗ ", "#c62828")
            soft = int(path.soft_probabilities.argmax())
            header = [f"{verdict}leaf {path.leaf}: {display_name(b.classes[pred])}",
                      f"leaf probability {path.leaf_distribution[pred]:.2f}; soft tree: "
                      f"{display_name(b.classes[soft])} ({path.soft_probabilities[soft]:.2f})"]
            col = figures.Column(title=f"{b.label} — decision path", cells=cells, header_lines=header,
                                 header_image=disp, header_color=color)
            png = figures.panel_figure([col], title=f"Decision path (greedy routing) — {b.name}",
                                       left_label="where it fires in the image",
                                       right_label="prototype (source patch)",
                                       subtitle="right = prototype present (exp(−d) > 0.5), left = absent")
            files[f"decision_path-{slug}"] = out / f"decision_path-{slug}.png"
            atomic_write_bytes(files[f"decision_path-{slug}"], png)
            page.heading(f"{b.label}: decision path")
            page.paragraph("The nodes visited by greedy routing, top to bottom: where each node's prototype is "
                           "closest in the image (heat map, 95th-percentile box), its source patch, its Euclidean "
                           "distance d and exp(−d), the probability of going right (\"present\").")
            page.image(html.Image(png, f"decision path of {b.name}", ""))
            info.update(leaf=path.leaf, predicted=b.classes[pred], soft_predicted=b.classes[soft],
                        path=[{"prototype": st.prototype, "distance": st.distance, "probability": st.probability,
                               "direction": "right" if st.right else "left", "location": list(st.location)}
                              for st in path.steps])
            lines.append(f"{b.name}: greedy path {' → '.join(f'p{st.prototype}' for st in path.steps)} → leaf "
                         f"{path.leaf}: {b.classes[pred]}")
        dists = b.model.leaf_distributions().detach().cpu().numpy()
        leaf_lines = {ell: [f"{c}:{display_name(b.classes[c])[:14]} {dists[ell, c]:.2f}"
                            for c in np.argsort(dists[ell])[::-1][:2]] for ell in range(len(dists))}
        images = {}
        for j in range(b.model.num_prototypes):
            _, patch, _ = _source_images(cache, b, j, long_side)
            images[j] = patch
        png = tree_figure(b.model.tree(), images, leaf_lines, highlight=highlight,
                          title=f"{b.name}: {b.model.num_leaves} leaves, {b.model.num_prototypes} prototypes"
                                + ("  (red: greedy path of the image)" if highlight else ""))
        files[f"tree-{slug}"] = out / f"tree-{slug}.png"
        atomic_write_bytes(files[f"tree-{slug}"], png)
        page.heading(f"{b.label}: the tree")
        page.image(html.Image(png, f"tree of {b.name}", ""))
        result.append(info)
    return result


# ----------------------------------------------------------------------------- explanation parts


def _explanation_column(b: ModelBundle, exp: Explanation, disp: np.ndarray, parts, cache: SourceCache,
                        long_side: int, true_label: int | None) -> figures.Column:
    h, w = disp.shape[:2]
    cells = []
    for ev in exp.evidence:
        up, box = activation(ev.distance_map, (h, w))
        where = render.overlay_heatmap(disp, up)
        where = _with_parts(where, parts)
        where = render.draw_box(where, box, render.BOX_COLOR, width=2)
        _, patch, _ = _source_images(cache, b, ev.prototype, long_side)
        proto_classes = ", ".join(display_name(b.classes[c]) for c in ev.classes) or "no class"
        cells.append(figures.Cell(
            left=where, right=patch, title=f"#{ev.rank}  prototype {ev.prototype}",
            subtitle=f"of class {proto_classes}",
            fields=[("similarity", f"{ev.similarity:.3f}"), ("weight", _fmt(ev.weight)),
                    ("contribution", _fmt(ev.contribution))],
            note=f"closest patch at cell ({ev.location[0]}, {ev.location[1]})",
            highlight=exp.explained not in ev.classes))
    pred = exp.predicted
    verdict, color = "", "black"
    if true_label is not None and true_label < len(b.classes):
        verdict, color = ("✓ ", "#1a7f37") if pred == true_label else ("✗ ", "#c62828")
    lines = [f"{verdict}predicts {display_name(b.classes[pred])}",
             f"probability {exp.probabilities[pred]:.2f}  ·  logit {exp.logits[pred]:.2f}"]
    if exp.explained != pred:
        lines.append(f"explaining {display_name(b.classes[exp.explained])}: logit {exp.explained_logit:.2f}")
    top = sum(ev.contribution for ev in exp.evidence)
    lines.append(f"top-{len(exp.evidence)} contributions: {top:+.2f} of {exp.explained_logit:+.2f}")
    header = _with_parts(disp, parts)
    return figures.Column(title=b.label, cells=cells, header_lines=lines, header_image=header, header_color=color)


def _to_original(box: list[int] | list[float], region, disp: np.ndarray) -> list[float]:
    sx = (region[2] - region[0]) / disp.shape[1]
    sy = (region[3] - region[1]) / disp.shape[0]
    return [round(region[0] + box[0] * sx, 1), round(region[1] + box[1] * sy, 1),
            round(region[0] + box[2] * sx, 1), round(region[1] + box[3] * sy, 1)]


def _explanation_json(b: ModelBundle, exp: Explanation, region, disp: np.ndarray, cache: SourceCache,
                      long_side: int) -> dict[str, Any]:
    top = []
    for ev in exp.evidence:
        _, box = activation(ev.distance_map, disp.shape[:2])
        _, _, src = _source_images(cache, b, ev.prototype, long_side)
        top.append({"rank": ev.rank, "prototype": ev.prototype, "classes": [b.classes[c] for c in ev.classes],
                    "similarity": ev.similarity, "weight": ev.weight, "contribution": ev.contribution,
                    "distance": ev.distance, "location": list(ev.location),
                    "activation_box": _to_original(box, region, disp), "source": src})
    return {"name": b.name, "run": str(b.run.path), "backbone": b.model.config.backbone,
            "predicted": b.classes[exp.predicted], "probability": float(exp.probabilities[exp.predicted]),
            "explained": b.classes[exp.explained], "logit": exp.explained_logit,
            "region": [round(v, 2) for v in region], "top_k": top}


def _explanation_table(b: ModelBundle, exp: Explanation, col: figures.Column) -> html.Table:
    table = html.Table(["rank", "prototype", "class", "similarity", "weight", "contribution", "where", "patch",
                        "source image"])
    for ev, cell in zip(exp.evidence, col.cells, strict=True):
        rec = b.record(ev.prototype) or {}
        src = (rec.get("source") or {}).get("path", "–")
        table.rows.append([ev.rank, ev.prototype, ", ".join(display_name(b.classes[c]) for c in ev.classes),
                           ev.similarity, ev.weight, ev.contribution,
                           html.Image(render.png_bytes(cell.left), f"prototype {ev.prototype} on the image", width=112),
                           html.Image(render.png_bytes(cell.right), f"prototype {ev.prototype} patch", width=112),
                           str(src)])
    return table


# ----------------------------------------------------------------------------- gallery


def _gallery(req: VisualizeRequest, bundles: list[ModelBundle], scenes: list[_Scene], index: DatasetIndex | None,
             cache: SourceCache, long_side: int, rt: Runtime, reporter: Reporter) -> dict[str, Any]:
    if len(bundles) < 2:
        raise P2PError("--prototypes needs a teacher and at least one student (give two or more --model)")
    if index is None:
        raise P2PError("--prototypes needs the test set of the models' dataset")
    teacher, students = bundles[0], bundles[1:]
    if req.class_name:
        c = class_index(req.class_name, teacher.classes)
    elif scenes:
        c = scenes[0].explanation.explained
    else:  # ProtoTree runs only: no top-k explanation chose a class
        raise P2PError("--prototypes with ProtoTree runs needs --class NAME (the class whose prototypes to show)")
    acts = base_activations([(b.name, b.model, b.image_size, bool(b.cfg.crop_bbox)) for b in bundles], index, "test",
                            req.workdir, rt, batch_size=int(teacher.cfg.test_batch_size), reporter=reporter)
    argmins = [a.argmin.astype(np.int64) for a in acts]
    grids = [tuple(a.grid) for a in acts]
    if len(set(grids)) != 1:
        shown = ", ".join(f"{b.name} {g[0]}×{g[1]}" for b, g in zip(bundles, grids, strict=True))
        raise P2PError(f"--prototypes: the models' feature grids differ ({shown}); PMS needs the same grid")
    n_loc = grids[0][0] * grids[0][1]
    matchings: list[Matching] = [match_prototypes(s.name, argmins[0], a, n_loc)
                                 for s, a in zip(students, argmins[1:], strict=True)]
    rows = [j for j in range(teacher.model.num_prototypes) if teacher.model.class_identity[j, c] > 0]
    if scenes:
        sims = scenes[0].explanation.similarities
        rows.sort(key=lambda j: -float(sims[j]))
    rows = rows[: max(1, req.gallery_rows)]
    n_images = argmins[0].shape[0]
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
        big, patch, _ = _source_images(cache, teacher, j, long_side)
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
            sbig, spatch, _ = _source_images(cache, s, js, long_side)
            s_classes = torch_classes(s, js)
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
    return {"png": png, "table": table,
            "json": {"teacher": teacher.name, "class": teacher.classes[c], "n_images": n_images,
                     "students": pairs_json}}


def torch_classes(b: ModelBundle, j: int) -> list[int]:
    """Classes prototype ``j`` of ``b`` belongs to."""
    return [int(k) for k in np.nonzero(b.model.class_identity[j].cpu().numpy() > 0)[0]]

