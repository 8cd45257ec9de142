"""Explanations laid out for people: figure columns, HTML tables and JSON records.

* :func:`explanation_column` — one model's column of the explanation figure (Proto2Proto Fig. 1,
  after ProtoPNet's Fig. 2): its prediction, then per top-k prototype where it fires on the
  image (similarity heat map and 95th-percentile box) beside its source patch, with the
  similarity s_j, the last-layer weight w_cj and the contribution s_j · w_cj;
* :func:`explanation_figure` — those columns side by side;
* :func:`decision_path_figure` and :func:`tree_overview` — a ProtoTree's greedy path for the
  image and the whole tree with a patch per node.

The numbers come from :mod:`p2p_cli.explain.local` and :mod:`p2p_cli.explain.tree_path`; the
pixels from :mod:`p2p_cli.viz`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from p2p_cli.explain.local import Explanation, activation
from p2p_cli.explain.sources import SourceCache, source_images
from p2p_cli.explain.tree_path import TreePath
from p2p_cli.models.runs import LoadedRun
from p2p_cli.viz import figures, html, render
from p2p_cli.viz.explanation import PartBoxes, display_name, signed, to_original, verdict, where_it_fires, with_parts
from p2p_cli.viz.tree import tree_figure

THUMB = 112
"""CSS width of the HTML tables' thumbnails (JPEG at twice that for high-density screens)."""


def explanation_column(run: LoadedRun, exp: Explanation, disp: np.ndarray, parts: PartBoxes, cache: SourceCache,
                       long_side: int, true_label: int | None) -> figures.Column:
    """``run``'s column of the explanation figure for the image shown as ``disp`` (h, w, 3)."""
    h, w = disp.shape[:2]
    cells = []
    for ev in exp.evidence:
        up, box = activation(ev.distance_map, (h, w))
        _, patch, _ = source_images(cache, run, ev.prototype, long_side)
        proto_classes = ", ".join(display_name(run.classes[c]) for c in ev.classes) or "no class"
        cells.append(figures.Cell(
            left=where_it_fires(disp, up, box, parts), right=patch, title=f"#{ev.rank}  prototype {ev.prototype}",
            subtitle=f"of class {proto_classes}",
            fields=[("similarity", f"{ev.similarity:.3f}"), ("weight", signed(ev.weight)),
                    ("contribution", signed(ev.contribution))],
            note=f"closest patch at cell ({ev.location[0]}, {ev.location[1]})",
            highlight=exp.explained not in ev.classes))
    pred = exp.predicted
    mark, color = verdict(pred, true_label, len(run.classes))
    lines = [f"{mark}predicts {display_name(run.classes[pred])}",
             f"probability {exp.probabilities[pred]:.2f}  ·  logit {exp.logits[pred]:.2f}"]
    if exp.explained != pred:
        lines.append(f"explaining {display_name(run.classes[exp.explained])}: logit {exp.explained_logit:.2f}")
    top = sum(ev.contribution for ev in exp.evidence)
    lines.append(f"top-{len(exp.evidence)} contributions: {top:+.2f} of {exp.explained_logit:+.2f}")
    return figures.Column(title=run.label, cells=cells, header_lines=lines, header_image=with_parts(disp, parts),
                          header_color=color)


def explanation_json(run: LoadedRun, exp: Explanation, region, disp: np.ndarray, cache: SourceCache,
                     long_side: int) -> dict[str, Any]:
    """``run``'s explanation as a JSON record; activation boxes in the original image's pixels."""
    top = []
    for ev in exp.evidence:
        _, box = activation(ev.distance_map, disp.shape[:2])
        _, _, src = source_images(cache, run, ev.prototype, long_side)
        top.append({"rank": ev.rank, "prototype": ev.prototype, "classes": [run.classes[c] for c in ev.classes],
                    "similarity": ev.similarity, "weight": ev.weight, "contribution": ev.contribution,
                    "distance": ev.distance, "location": list(ev.location),
                    "activation_box": to_original(box, region, disp), "source": src})
    return {"name": run.name, "run": str(run.run.path), "backbone": run.model.config.backbone,
            "predicted": run.classes[exp.predicted], "probability": float(exp.probabilities[exp.predicted]),
            "explained": run.classes[exp.explained], "logit": exp.explained_logit,
            "region": [round(v, 2) for v in region], "top_k": top}


def explanation_table(run: LoadedRun, exp: Explanation, col: figures.Column) -> html.Table:
    """The HTML table of ``run``'s top-k prototypes, with the images of its figure column ``col``."""
    table = html.Table(["rank", "prototype", "class", "similarity", "weight", "contribution", "where", "patch",
                        "source image"])
    for ev, cell in zip(exp.evidence, col.cells, strict=True):
        rec = run.record(ev.prototype) or {}
        src = (rec.get("source") or {}).get("path", "–")
        table.rows.append([ev.rank, ev.prototype, ", ".join(display_name(run.classes[c]) for c in ev.classes),
                           ev.similarity, ev.weight, ev.contribution,
                           html.Image(render.jpeg_bytes(cell.left, long_side=2 * THUMB),
                                      f"prototype {ev.prototype} on the image", width=THUMB),
                           html.Image(render.jpeg_bytes(cell.right, long_side=2 * THUMB),
                                      f"prototype {ev.prototype} patch", width=THUMB),
                           str(src)])
    return table


def explanation_figure(columns: list[figures.Column], *, top_k: int, image: Path, true_class: str | None,
                       class_name: str | None) -> bytes:
    """PNG of the explanation figure: the models' columns side by side under one title."""
    subtitle = ("true class: " + display_name(true_class)
                if true_class is not None else "image not in the dataset: true class unknown")
    subtitle += ("  ·  explaining class " + display_name(class_name)) if class_name else \
        "  ·  each model explains its predicted class"
    return figures.panel_figure(columns, title=f"Why? Top-{top_k} prototypes — {image.name}",
                                left_label="where it fires in this image", right_label="prototype (source patch)",
                                subtitle=subtitle)


# ----------------------------------------------------------------------------- ProtoTree


def decision_path_figure(run: LoadedRun, path: TreePath, disp: np.ndarray, cache: SourceCache, long_side: int,
                         true_label: int | None) -> bytes:
    """PNG of ``run``'s greedy path for the image shown as ``disp`` (h, w, 3): per visited node
    where its prototype is closest (heat map, 95th-percentile box), its patch, d and exp(−d)."""
    h, w = disp.shape[:2]
    cells = []
    for i, st in enumerate(path.steps, start=1):
        up, box = activation(st.distance_map, (h, w))
        _, patch, _ = source_images(cache, run, st.prototype, long_side)
        cells.append(figures.Cell(
            left=where_it_fires(disp, up, box), right=patch, title=f"node {i}: prototype {st.prototype}",
            subtitle="present → go right" if st.right else "absent → go left",
            fields=[("distance", f"{st.distance:.3f}"), ("exp(−d)", f"{st.probability:.3f}")],
            note=f"closest patch at cell ({st.location[0]}, {st.location[1]})"))
    pred = path.predicted
    mark, color = verdict(pred, true_label, len(run.classes))
    soft = int(path.soft_probabilities.argmax())
    header = [f"{mark}leaf {path.leaf}: {display_name(run.classes[pred])}",
              f"leaf probability {path.leaf_distribution[pred]:.2f}; soft tree: "
              f"{display_name(run.classes[soft])} ({path.soft_probabilities[soft]:.2f})"]
    col = figures.Column(title=f"{run.label} — decision path", cells=cells, header_lines=header,
                         header_image=disp, header_color=color)
    return figures.panel_figure([col], title=f"Decision path (greedy routing) — {run.name}",
                                left_label="where it fires in the image", right_label="prototype (source patch)",
                                subtitle="right = prototype present (exp(−d) > 0.5), left = absent")


def decision_path_json(run: LoadedRun, path: TreePath) -> dict[str, Any]:
    """The greedy path as JSON fields: leaf, greedy and soft predictions, the visited nodes."""
    return dict(leaf=path.leaf, predicted=run.classes[path.predicted],
                soft_predicted=run.classes[int(path.soft_probabilities.argmax())],
                path=[{"prototype": st.prototype, "distance": st.distance, "probability": st.probability,
                       "direction": "right" if st.right else "left", "location": list(st.location)}
                      for st in path.steps])


def tree_overview(run: LoadedRun, cache: SourceCache, long_side: int, highlight: set) -> bytes:
    """PNG of ``run``'s whole tree: each node's prototype patch, each leaf's two likeliest classes;
    ``highlight`` (``("p", j)`` / ``("l", leaf)``) in red."""
    model: Any = run.model
    dists = model.leaf_distributions().detach().cpu().numpy()
    leaf_lines = {ell: [f"{c}:{display_name(run.classes[c])[:14]} {dists[ell, c]:.2f}"
                        for c in np.argsort(dists[ell])[::-1][:2]] for ell in range(len(dists))}
    images = {}
    for j in range(model.num_prototypes):
        _, patch, _ = source_images(cache, run, j, long_side)
        images[j] = patch
    return tree_figure(model.tree(), images, leaf_lines, highlight=highlight,
                       title=f"{run.name}: {model.num_leaves} leaves, {model.num_prototypes} prototypes"
                             + ("  (red: greedy path of the image)" if highlight else ""))
