"""``p2p visualize``: the explanation figure (Proto2Proto Fig. 1), the matched-prototype gallery
(Fig. 4), ProtoTree decision paths, and a self-contained HTML page, from trained runs and one image.

Orchestration only: the explanations are :mod:`p2p_cli.explain`, the pixels :mod:`p2p_cli.viz`.
"""

from __future__ import annotations

import dataclasses
import glob
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from p2p_cli.data.index import DatasetIndex, Sample
from p2p_cli.data.loaders import load_dataset_index
from p2p_cli.errors import P2PError
from p2p_cli.evaluation.collect import base_activations
from p2p_cli.explain import panels, sections
from p2p_cli.explain.gallery import Gallery, draw_gallery
from p2p_cli.explain.images import display_image, find_sample, model_input, part_boxes, read_image, sample_region
from p2p_cli.explain.local import Explanation, class_index, explain
from p2p_cli.explain.matching import gallery_rows, match_prototypes, teacher_first
from p2p_cli.explain.sources import SourceCache
from p2p_cli.explain.tree_path import tree_path
from p2p_cli.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from p2p_cli.io.checkpoint import read_metadata
from p2p_cli.io.rundir import RunDir, list_runs
from p2p_cli.models.runs import LoadedRun, load_run
from p2p_cli.runtime.device import Runtime, resolve_precision
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.viz import html
from p2p_cli.viz.explanation import boxes_on_display
from p2p_cli.workflows.predict import collect_images

QUICKSTART_NAMES = ("teacher", "baseline", "proto2proto")
"""Runs that ``p2p visualize`` shows by default, in this order, when they exist."""
DISPLAY_MIN = 224  # display images: longer side max(224, S) px


@dataclass(frozen=True)
class VisualizeRequest:
    """What ``p2p visualize`` was asked (``models`` empty: :func:`default_model_runs`)."""

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
    precision: str | None = None  # None: each model at the precision it was trained with


@dataclass
class VisualizeResult:
    out: Path
    files: dict[str, Path]
    summary: dict[str, Any]
    lines: list[str] = field(default_factory=list)


@dataclass
class _Job:
    """What one ``visualize`` call works on and writes."""

    req: VisualizeRequest
    rt: Runtime
    out: Path
    long_side: int
    pil: Image.Image | None
    index: DatasetIndex | None
    sample: Sample | None
    split: str | None
    page: html.Page
    runtimes: dict[str, Runtime]  # per run name: the run's own precision (or --precision)
    cache: SourceCache = field(default_factory=SourceCache)
    files: dict[str, Path] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    @property
    def true_label(self) -> int | None:
        return self.sample.label if self.sample is not None else None

    def write(self, key: str, name: str, png: bytes) -> None:
        self.files[key] = self.out / name
        atomic_write_bytes(self.files[key], png)


def default_model_runs(workdir: Path) -> list[RunDir]:
    """The models ``p2p visualize`` shows without ``--model``.

    The runs named ``teacher``, ``baseline``, ``proto2proto`` (what ``p2p quickstart`` creates)
    that exist, in that order; otherwise the student runs whose recorded teacher exists, plus
    that teacher (the teacher with the most students; baselines before KD students); otherwise
    the only run of the workdir.
    """
    runs = {r.name: r for r in list_runs(workdir)}
    named = [runs[n] for n in QUICKSTART_NAMES if n in runs]
    if named:
        return named
    students: dict[Path, list[tuple[RunDir, str]]] = {}
    for run in runs.values():
        try:
            meta = read_metadata(run.model_path)
        except P2PError:
            continue
        teacher = meta.get("teacher")
        if not isinstance(teacher, dict):
            continue
        found = None
        for candidate in (teacher.get("path"), teacher.get("name")):
            if not candidate:
                continue
            path = Path(str(candidate))
            if path.is_dir() and RunDir(path).is_complete():
                found = RunDir(path)
                break
            if str(candidate) in runs:
                found = runs[str(candidate)]
                break
        if found is not None and found.path.resolve() != run.path.resolve():
            students.setdefault(found.path.resolve(), []).append((run, str(meta.get("method") or "")))
    if students:
        counts = Counter({k: len(v) for k, v in students.items()})
        teacher_path = sorted(counts, key=lambda p: (-counts[p], str(p)))[0]
        group = sorted(students[teacher_path], key=lambda rm: (rm[1] != "none", rm[0].name))
        return [RunDir(teacher_path)] + [r for r, _ in group]
    if len(runs) == 1:
        return list(runs.values())
    listing = ", ".join(runs) if runs else "none"
    raise P2PError(f"no default models in {workdir}: no runs named {'/'.join(QUICKSTART_NAMES)} and no student "
                   f"whose teacher exists; pass --model REF (runs: {listing})")


def _load(ref: str, workdir: Path, rt: Runtime) -> LoadedRun:
    """Run ``ref`` on the runtime's device; it must record its config and one name per class."""
    run = load_run(ref, workdir)
    if run.config is None:
        raise P2PError(f"{run.run.path} is not a p2p run (no config.yaml)")
    if len(run.classes) != run.model.config.num_classes:
        raise P2PError(f"{run.run.model_path}: records {len(run.classes)} class names for "
                       f"{run.model.config.num_classes} classes")
    return run.to(rt.device)


def expand_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files from ``--image`` values: files, folders (their images, recursively) and glob
    patterns (``'photos/*.jpg'``), in order, each once."""
    paths: list[Path] = []
    for item in inputs:
        text = str(item)
        if not Path(text).exists() and any(c in text for c in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise P2PError(f"--image {text}: no file matches the pattern")
            paths += collect_images([Path(m) for m in matches])
        elif Path(text).exists():
            paths += collect_images([Path(text)])
        else:
            raise P2PError(f"--image {text}: no such file or folder")
    unique = list(dict.fromkeys(paths))
    if not unique and inputs:
        raise P2PError(f"--image {' '.join(map(str, inputs))}: no image found (extensions .jpg, .png, …)")
    return unique


def load_runs(req: VisualizeRequest, rt: Runtime) -> list[LoadedRun]:
    """The runs to explain with (``req.models``, else :func:`default_model_runs`), on ``rt``'s device."""
    refs = list(req.models) if req.models else [str(r.path) for r in default_model_runs(req.workdir)]
    runs = [_load(ref, req.workdir, rt) for ref in refs]
    if req.prototypes:
        runs = teacher_first(runs)
    names = [b.name for b in runs]
    if len(set(names)) != len(names):  # two runs with the same directory name: tell them apart
        for i, b in enumerate(runs):
            b.name = f"{b.name}#{i + 1}"
    return runs


def visualize_many(req: VisualizeRequest, images: Sequence[Path], rt: Runtime, reporter: Reporter
                   ) -> list[VisualizeResult]:
    """:func:`visualize` for each image with the runs loaded once; each image's files go to
    ``OUT/IMAGE-STEM`` (``OUT`` default ``WORKDIR/visualizations``)."""
    if len(images) <= 1:
        return [visualize(dataclasses.replace(req, image=images[0] if images else None), rt, reporter)]
    runs = load_runs(req, rt)
    root = req.out or req.workdir / "visualizations"
    stems = Counter(p.stem for p in images)
    results = []
    for n, image in enumerate(images):
        name = image.stem if stems[image.stem] == 1 else f"{image.stem}-{n + 1}"
        one = dataclasses.replace(req, image=image, out=root / name,
                                  json_path=req.json_path and req.json_path.with_name(f"{name}.json"))
        results.append(visualize(one, rt, reporter, runs))
    return results


def visualize(req: VisualizeRequest, rt: Runtime, reporter: Reporter,
              runs: list[LoadedRun] | None = None) -> VisualizeResult:
    """Explain ``req.image`` with ``runs`` (default :func:`load_runs`); write the figures and the page."""
    if req.image is None and not (req.prototypes and req.class_name):
        raise P2PError("give --image IMG (or --prototypes with --class NAME for the gallery alone)")
    if req.top_k < 1:
        raise P2PError(f"--top-k must be >= 1, got {req.top_k}")
    runs = runs if runs is not None else load_runs(req, rt)
    out = req.out or (req.workdir / "visualizations" / (req.image.stem if req.image else f"gallery-{req.class_name}"))
    out.mkdir(parents=True, exist_ok=True)
    job = _open(req, rt, runs, out, reporter)
    summary: dict[str, Any] = {"image": str(req.image) if req.image else None, "models": []}
    trees = [b for b in runs if hasattr(b.model, "tree")]  # ProtoTree runs: decision path + tree image
    nets = [b for b in runs if b not in trees]
    if job.pil is not None and job.sample is not None and job.index is not None:
        summary["true_class"] = job.index.classes[job.sample.label]
        summary["split"] = job.split
    if trees:
        summary["trees"] = [_tree(job, b) for b in trees]
    explanations = _explanations(job, nets, summary["models"]) if job.pil is not None and nets else []
    if req.prototypes:
        gallery = _gallery(job, runs, explanations, reporter)
        job.write("gallery", "gallery.png", gallery.png)
        sections.gallery(job.page, gallery)
        summary["gallery"] = gallery.json
    files = job.files
    files["html"] = out / "index.html"
    atomic_write_text(files["html"], job.page.render())
    summary["files"] = {k: str(v) for k, v in files.items()}
    if req.json_path:
        atomic_write_json(req.json_path, summary)
        files["json"] = req.json_path
    for m in summary["models"]:
        job.lines.append(f"{m['name']}: predicts {m['predicted']} (p = {m['probability']:.2f}), explains "
                         f"{m['explained']} with prototypes {', '.join(str(t['prototype']) for t in m['top_k'])}")
    if "gallery" in summary:
        for s in summary["gallery"]["students"]:
            job.lines.append(f"{s['name']}: PMS {s['pms']:.3f} against {summary['gallery']['teacher']}")
    return VisualizeResult(out, files, summary, job.lines)


def _open(req: VisualizeRequest, rt: Runtime, runs: list[LoadedRun], out: Path, reporter: Reporter) -> _Job:
    """Read the image and find it in the dataset of the first run (for the true label, part
    annotations, bbox crops and the gallery's test set)."""
    need_index = req.show_parts or req.prototypes or any(b.crop_bbox for b in runs)
    index: DatasetIndex | None = None
    try:
        index = load_dataset_index(runs[0].config)  # type: ignore[arg-type]
    except P2PError as exc:
        if need_index:
            raise
        reporter.debug(f"dataset of {runs[0].name} not available ({exc}); no true label shown")
    pil = read_image(req.image) if req.image else None
    found = find_sample(index, req.image) if pil is not None and index is not None and req.image is not None else None
    sample = found[0] if found else None
    if req.show_parts:
        if pil is None:
            raise P2PError("--show-parts needs --image")
        if sample is None:
            raise P2PError(f"--show-parts: {req.image} is not an image of the dataset {index.root if index else ''} "
                           "(part annotations are known only for dataset images)")
        if not sample.parts:
            raise P2PError(f"--show-parts: the dataset at {index.root if index else ''} has no part annotations")
    long_side = max(DISPLAY_MIN, max(b.image_size for b in runs))
    runtimes = {b.name: dataclasses.replace(rt, amp_dtype=resolve_precision(
        req.precision or (b.config.precision if b.config else "auto"), rt.device)) for b in runs}
    return _Job(req, rt, out, long_side, pil, index, sample, found[1] if found else None,
                sections.new_page(req.image, pil, runs), runtimes)


def _tree(job: _Job, b: LoadedRun) -> dict[str, Any]:
    """A ProtoTree run: the greedy decision path for the image (when given) and the whole tree."""
    slug = b.name.replace("#", "-")
    model: Any = b.model
    info: dict[str, Any] = {"name": b.name, "run": str(b.run.path), "leaves": model.num_leaves,
                            "prototypes": model.num_prototypes}
    highlight: set = set()
    if job.pil is not None:
        region = sample_region(job.sample, job.pil, b.crop_bbox)
        path = tree_path(model, model_input(job.pil, b.image_size, region), job.runtimes[b.name])
        disp = display_image(job.pil, job.long_side, region)
        highlight = {("p", st.prototype) for st in path.steps} | {("l", path.leaf)}
        png = panels.decision_path_figure(b, path, disp, job.cache, job.long_side, job.true_label)
        job.write(f"decision_path-{slug}", f"decision_path-{slug}.png", png)
        sections.decision_path(job.page, b, png)
        info.update(panels.decision_path_json(b, path))
        job.lines.append(f"{b.name}: greedy path {' → '.join(f'p{st.prototype}' for st in path.steps)} → leaf "
                         f"{path.leaf}: {b.classes[path.predicted]}")
    png = panels.tree_overview(b, job.cache, job.long_side, highlight)
    job.write(f"tree-{slug}", f"tree-{slug}.png", png)
    sections.tree(job.page, b, png)
    return info


def _explanations(job: _Job, nets: list[LoadedRun], records: list[dict[str, Any]]) -> list[Explanation]:
    """Per ProtoPNet run: its top-k explanation of the image; one figure, one JSON record each."""
    req, pil = job.req, job.pil
    assert pil is not None and req.image is not None
    explanations, columns = [], []
    for b in nets:
        cls = class_index(req.class_name, b.classes) if req.class_name else None
        region = sample_region(job.sample, pil, b.crop_bbox)
        exp = explain(b.model, model_input(pil, b.image_size, region), job.runtimes[b.name],  # type: ignore[arg-type]
                      top_k=req.top_k,
                      class_index=cls)
        disp = display_image(pil, job.long_side, region)
        explanations.append(exp)
        parts = (boxes_on_display(part_boxes(job.index, job.sample, region), region, disp)
                 if req.show_parts and job.index is not None and job.sample is not None else [])
        columns.append(panels.explanation_column(b, exp, disp, parts, job.cache, job.long_side, job.true_label))
        records.append(panels.explanation_json(b, exp, region, disp, job.cache, job.long_side))
    true_class = job.index.classes[job.true_label] if job.true_label is not None and job.index is not None else None
    png = panels.explanation_figure(columns, top_k=req.top_k, image=req.image, true_class=true_class,
                             class_name=req.class_name)
    job.write("explanation", "explanation.png", png)
    sections.explanation(job.page, png, nets, explanations, columns, req.show_parts)
    return explanations


def _gallery(job: _Job, runs: list[LoadedRun], explanations: list[Explanation], reporter: Reporter) -> Gallery:
    """Match every student's prototypes to the teacher's (the first run) on the test set."""
    req = job.req
    if len(runs) < 2:
        raise P2PError("--prototypes needs a teacher and at least one student (give two or more --model)")
    if job.index is None:
        raise P2PError("--prototypes needs the test set of the models' dataset")
    teacher, students = runs[0], runs[1:]
    if req.class_name:
        c = class_index(req.class_name, teacher.classes)
    elif explanations:
        c = explanations[0].explained
    else:  # ProtoTree runs only: no top-k explanation chose a class
        raise P2PError("--prototypes with ProtoTree runs needs --class NAME (the class whose prototypes to show)")
    assert teacher.config is not None
    acts = base_activations(runs, job.index, "test", req.workdir, job.runtimes[teacher.name],
                            batch_size=int(teacher.config.test_batch_size), reporter=reporter)
    argmins = [a.argmin.astype(np.int64) for a in acts]
    grids = [tuple(a.grid) for a in acts]
    if len(set(grids)) != 1:
        shown = ", ".join(f"{b.name} {g[0]}×{g[1]}" for b, g in zip(runs, grids, strict=True))
        raise P2PError(f"--prototypes: the models' feature grids differ ({shown}); PMS needs the same grid")
    n_loc = grids[0][0] * grids[0][1]
    matchings = [match_prototypes(s.name, argmins[0], a, n_loc) for s, a in zip(students, argmins[1:], strict=True)]
    rows = gallery_rows(teacher, c, req.gallery_rows, explanations[0].similarities if explanations else None)
    return draw_gallery(teacher, students, matchings, rows, c, argmins[0].shape[0], job.cache, job.long_side)
