"""Explanations of trained ProtoPNets: run models on an image, rank prototypes by their
contribution to a class, fetch prototype source patches from ``prototypes.json``, and match
teacher and student prototypes for the Proto2Proto gallery.

Everything here returns plain arrays and numbers; rendering is :mod:`p2p_cli.viz`.

ProtoPNet's decision for class c is ``logit_c = Σ_j w_cj · s_j`` with the similarity
``s_j = log((d_j + 1)/(d_j + ε))`` of prototype j's closest patch (``d_j`` its min squared
distance); the *contribution* of prototype j to class c is ``s_j · w_cj`` (the "points
contributed" of ProtoPNet's Fig. 2), and the top-k explanation lists the k largest.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from p2p_cli.data.datasets import DatasetIndex, Sample, crop_box, file_sha256, load_image, open_rgb
from p2p_cli.data.transforms import normalize
from p2p_cli.errors import P2PError, did_you_mean
from p2p_cli.io.checkpoint import read_metadata
from p2p_cli.io.config import TrainConfig, config_from_dict
from p2p_cli.io.rundir import RunDir, list_runs, resolve_ref
from p2p_cli.metrics.transfer import pms
from p2p_cli.models.factory import load_model
from p2p_cli.models.maps import percentile_box, upsampled_similarity
from p2p_cli.models.protopnet import ProtoOutput, ProtoPNet, PrototypeNetwork, log_similarity
from p2p_cli.runtime.device import Runtime

QUICKSTART_NAMES = ("teacher", "baseline", "proto2proto")
"""Runs that ``p2p visualize`` shows by default, in this order, when they exist."""

_READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


# ----------------------------------------------------------------------------- images


def read_image(path: str | Path) -> Image.Image:
    """Any image file PIL reads → RGB, upright. EXIF orientation is applied; transparency is
    composited on white; 16-bit and float grayscale are scaled to 8 bits. Anything unreadable
    is a one-line :class:`P2PError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise P2PError(f"{path}: image not found")
    if not path.is_file():
        raise P2PError(f"{path}: not a file (expected a JPEG/PNG image)")
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                arr = np.asarray(im, dtype=np.float64)
                top = 65535.0 if arr.max(initial=0) > 255 else 255.0
                im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, rgba)
            return im.convert("RGB")
    except _READ_ERRORS as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise P2PError(f"{path}: cannot read image ({reason}); expected a JPEG/PNG image") from None


def model_input(image: Image.Image, image_size: int, region: tuple[float, float, float, float] | None = None
                ) -> torch.Tensor:
    """The model input for ``image``: ``region`` (x0, y0, x1, y1; default the whole image) resized
    bilinearly to S × S exactly as the datasets do — uint8 (3, S, S)."""
    box = region or (0.0, 0.0, float(image.width), float(image.height))
    resized = image.resize((image_size, image_size), Image.Resampling.BILINEAR, box=box)
    return torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def display_image(image: Image.Image, long_side: int,
                  region: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """``region`` of ``image`` at its own aspect ratio, longer side ``long_side``: uint8 (h, w, 3)."""
    box = region or (0.0, 0.0, float(image.width), float(image.height))
    w, h = box[2] - box[0], box[3] - box[1]
    scale = long_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(image.resize(size, Image.Resampling.BICUBIC, box=box), dtype=np.uint8)


def display_name(name: str) -> str:
    """Class names for people: underscores become spaces (``Black_footed_Albatross``)."""
    return name.replace("_", " ")


# ----------------------------------------------------------------------------- models


@dataclass
class ModelBundle:
    """A trained run ready to explain: the model (eval, on the runtime's device) and its records."""

    name: str
    run: RunDir
    model: ProtoPNet
    meta: dict[str, Any]
    cfg: TrainConfig
    classes: list[str]
    prototypes: list[dict[str, Any]] | None  # prototypes.json records (None: no provenance)
    grid: tuple[int, int] | None

    @property
    def image_size(self) -> int:
        return int(self.cfg.image_size)

    @property
    def label(self) -> str:
        """``name (backbone[, method])`` for titles."""
        method = self.meta.get("method")
        extra = f", {method}" if method and self.meta.get("teacher") else ""
        return f"{self.name} ({self.model.config.backbone}{extra})"

    def record(self, j: int) -> dict[str, Any] | None:
        if self.prototypes is None or j >= len(self.prototypes):
            return None
        rec = self.prototypes[j]
        return rec if rec.get("prototype", j) == j else None


def load_bundle(ref: str | Path, workdir: Path, rt: Runtime) -> ModelBundle:
    """Resolve ``ref`` (run directory, its model file, or a run name in ``workdir``) and load it."""
    run = resolve_ref(ref, workdir)
    model, meta = load_model(run.model_path)
    cfg = config_from_dict(run.read_config(), source=str(run.config_path))
    model.to(rt.device).eval()
    classes = [str(c) for c in meta.get("class_names") or []]
    if len(classes) != model.config.num_classes:
        raise P2PError(f"{run.model_path}: records {len(classes)} class names for {model.config.num_classes} classes")
    records, grid = None, None
    if run.prototypes_path.is_file():
        try:
            doc = json.loads(run.prototypes_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise P2PError(f"{run.prototypes_path}: not valid JSON (re-create it with p2p push-prototypes)") from None
        records = doc.get("prototypes") if isinstance(doc, dict) else None
        grid = tuple(doc["grid"]) if isinstance(doc, dict) and doc.get("grid") else None
        if records is not None and len(records) != model.num_prototypes:
            records = None  # stale provenance (e.g. a pruned model): no patches rather than wrong ones
    return ModelBundle(run.name, run, model, meta, cfg, classes, records, grid)  # type: ignore[arg-type]


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


def class_index(name: str, classes: list[str]) -> int:
    """Index of class ``name`` (exact, or with spaces for underscores, or case-insensitive)."""
    for candidate in (name, name.replace(" ", "_")):
        if candidate in classes:
            return classes.index(candidate)
    lowered = [c.lower() for c in classes]
    for candidate in (name.lower(), name.replace(" ", "_").lower()):
        if candidate in lowered:
            return lowered.index(candidate)
    shown = ", ".join(classes[:8]) + (", …" if len(classes) > 8 else "")
    raise P2PError(f"unknown class '{name}'{did_you_mean(name, classes)}; classes: {shown}")


# ----------------------------------------------------------------------------- explanation


@dataclass
class Evidence:
    """One prototype's part in a decision (arrays are the model's grid, (H, W))."""

    rank: int
    prototype: int
    classes: list[int]
    similarity: float
    weight: float
    contribution: float
    distance: float
    location: tuple[int, int]
    distance_map: np.ndarray  # (H, W) squared distances of the prototype to every patch


@dataclass
class Explanation:
    """A model's decision on one image and the top-k prototypes for the explained class."""

    logits: np.ndarray  # (K,)
    probabilities: np.ndarray  # (K,)
    predicted: int
    explained: int
    evidence: list[Evidence]
    similarities: np.ndarray  # (m,)
    grid: tuple[int, int]

    @property
    def explained_logit(self) -> float:
        return float(self.logits[self.explained])


@torch.no_grad()
def forward_one(model: PrototypeNetwork, image: torch.Tensor, rt: Runtime) -> ProtoOutput:
    """``model`` (eval mode) on one uint8 (3, S, S) ``image``: a batch-of-one output, the backbone
    under the runtime's autocast, the prototype head in fp32."""
    model.eval()
    x = rt.images(normalize(image)[None])
    with rt.autocast():
        feats = model.features(x)
    return model.head(feats)


@torch.no_grad()
def explain(model: ProtoPNet, image: torch.Tensor, rt: Runtime, *, top_k: int = 5,
            class_index: int | None = None) -> Explanation:
    """Run ``model`` on one uint8 (3, S, S) ``image``; rank prototypes by contribution
    ``s_j · w_cj`` to class c (the prediction, or ``class_index``)."""
    out = forward_one(model, image, rt)
    dist = out.distances[0].float()  # (m, H, W)
    min_d = out.min_distances[0].float()  # (m,)
    sims = log_similarity(min_d)
    logits = out.logits[0].float()
    predicted = int(logits.argmax())
    c = predicted if class_index is None else int(class_index)
    weights = model.last_layer.weight[c].float()  # (m,)
    contrib = sims * weights
    k = max(1, min(int(top_k), model.num_prototypes))
    order = torch.argsort(contrib, descending=True)[:k]
    h, w = dist.shape[-2:]
    flat_arg = dist.flatten(1).argmin(dim=1)
    identity = model.class_identity.cpu()
    evidence = []
    for rank, j in enumerate(order.tolist(), start=1):
        loc = int(flat_arg[j])
        evidence.append(Evidence(
            rank=rank, prototype=j, classes=torch.nonzero(identity[j] > 0).flatten().tolist(),
            similarity=float(sims[j]), weight=float(weights[j]), contribution=float(contrib[j]),
            distance=float(min_d[j]), location=(loc // w, loc % w), distance_map=dist[j].cpu().numpy()))
    return Explanation(logits=logits.cpu().numpy(), probabilities=torch.softmax(logits, 0).cpu().numpy(),
                       predicted=predicted, explained=c, evidence=evidence, similarities=sims.cpu().numpy(),
                       grid=(int(h), int(w)))


@dataclass
class PathStep:
    """One node visited by a ProtoTree's greedy routing."""

    prototype: int
    distance: float  # Euclidean min distance d_j
    probability: float  # exp(−d_j): probability of routing right ("prototype present")
    right: bool  # direction taken (p > 0.5)
    location: tuple[int, int]
    distance_map: np.ndarray


@dataclass
class TreePath:
    steps: list[PathStep]
    leaf: int
    leaf_distribution: np.ndarray  # (K,)
    predicted: int  # greedy prediction: the leaf's arg-max class
    soft_probabilities: np.ndarray  # (K,) the distributed (soft) tree's ŷ
    leaf_probability: float  # π_leaf(x) in the soft tree


@torch.no_grad()
def tree_path(model: torch.nn.Module, image: torch.Tensor, rt: Runtime) -> TreePath:
    """Greedy routing of a ProtoTree on one uint8 (3, S, S) ``image``: at every node go right iff
    exp(−d) > 0.5, down to a leaf."""
    out = forward_one(model, image, rt)
    dist = out.distances[0].float()  # (m, H, W)
    min_d = out.min_distances[0].float()
    h, w = dist.shape[-2:]
    flat_arg = dist.flatten(1).argmin(dim=1)
    steps = []
    node = model.tree()
    while node.leaf is None:
        j = int(node.prototype)  # type: ignore[arg-type]
        p = float(torch.exp(-min_d[j]))
        loc = int(flat_arg[j])
        steps.append(PathStep(j, float(min_d[j]), p, p > 0.5, (loc // w, loc % w), dist[j].cpu().numpy()))
        node = node.right if p > 0.5 else node.left  # type: ignore[assignment]
    leaf = int(node.leaf)
    dists = model.leaf_distributions()[leaf].float().cpu().numpy()
    pi = model.log_path_probabilities(min_d[None])[0, leaf].exp()
    return TreePath(steps, leaf, dists, int(dists.argmax()), out.logits[0].float().exp().cpu().numpy(), float(pi))


def activation(distance_map: np.ndarray, size: tuple[int, int], percentile: float = 95.0
               ) -> tuple[np.ndarray, list[int]]:
    """ProtoPNet's activation map and box at ``size`` = (height, width): the similarity map
    upsampled bicubically (float32 (height, width)) and its ``percentile`` box [x0, y0, x1, y1]."""
    up = upsampled_similarity(torch.from_numpy(np.asarray(distance_map, dtype=np.float32)), size)
    return up.numpy(), percentile_box(up, percentile)


# ----------------------------------------------------------------------------- prototype sources


@dataclass
class SourceView:
    """A prototype's source: the input-resolution image (uint8 (S, S, 3)) and its boxes in it,
    or ``problem`` when it cannot be shown (no provenance, file missing or changed)."""

    image: np.ndarray | None
    activation_box: list[int] | None
    receptive_field_box: list[int] | None
    record: dict[str, Any] | None
    problem: str | None = None


class SourceCache:
    """Loads prototype source images once per (path, region, size) and checks their sha256."""

    def __init__(self) -> None:
        self._images: dict[tuple, np.ndarray] = {}
        self._sha: dict[str, str] = {}

    def view(self, bundle: ModelBundle, j: int) -> SourceView:
        rec = bundle.record(j)
        if rec is None:
            return SourceView(None, None, None, None, "no provenance\n(run p2p push-prototypes)")
        src = rec.get("source")
        if not src:
            return SourceView(None, None, None, rec, "never pushed\n(no image of its class)")
        path = Path(src["path"])
        if not path.is_file():
            return SourceView(None, None, None, rec, "source image\nnot found")
        key = str(path)
        if key not in self._sha:
            self._sha[key] = file_sha256(path)
        if src.get("sha256") and self._sha[key] != src["sha256"]:
            return SourceView(None, None, None, rec, "source image changed\nsince the push")
        size = int(bundle.image_size)
        region = src.get("region")
        cache_key = (key, tuple(region) if region else None, bool(rec.get("crop_bbox")), size)
        if cache_key not in self._images:
            if region:
                pixels = model_input(open_rgb(path), size, tuple(region))  # type: ignore[arg-type]
            elif rec.get("crop_bbox"):  # provenance written before regions were recorded
                return SourceView(None, None, None, rec, "bbox crop unknown\n(re-run push-prototypes)")
            else:
                pixels = load_image(Sample(path, 0), size, crop_bbox=False)
            self._images[cache_key] = pixels.permute(1, 2, 0).numpy()
        return SourceView(self._images[cache_key], rec.get("activation_box"), rec.get("receptive_field_box"), rec)


# ----------------------------------------------------------------------------- dataset lookups


def find_sample(index: DatasetIndex, path: Path) -> tuple[Sample, str] | None:
    """The dataset sample whose file is ``path`` (same resolved path, else same size and sha256),
    with its split name, or None."""
    target = path.resolve()
    splits = (("train", index.train), ("test", index.test))
    for split, samples in splits:
        for s in samples:
            if Path(s.path).resolve() == target:
                return s, split
    size = target.stat().st_size
    digest = None
    for split, samples in splits:
        for s in samples:
            try:
                if Path(s.path).stat().st_size != size:
                    continue
            except OSError:
                continue
            digest = digest or file_sha256(target)
            if file_sha256(s.path) == digest:
                return s, split
    return None


def part_boxes(index: DatasetIndex, sample: Sample, region: tuple[float, float, float, float]
               ) -> list[tuple[str, list[float]]]:
    """Ground-truth part boxes of ``sample`` in original pixels relative to ``region``'s origin:
    ``[(part name, [x0, y0, x1, y1]), ...]`` for the visible parts.

    The synthetic set's boxes are exact: the drawn token, centre ± its radius (``synthetic.json``).
    Other datasets annotate points only: a box of half-side 36/224 of the region's shorter side
    around each point (the part-consistency metric's box, :mod:`p2p_cli.metrics.parts`).
    """
    if not sample.parts:
        return []
    names = index.part_names or [f"part {i + 1}" for i in range(len(sample.parts))]
    half = None
    meta_path = Path(index.root) / "synthetic.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            size = float(meta["params"]["image_size"])
            radius = max(2, round(float(meta["preset_config"]["part_radius"]) * size))
            half = (float(radius), float(radius + 1))  # token covers [c - r, c + r] inclusive
        except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError):
            half = None
    x0, y0, x1, y1 = region
    boxes = []
    for name, (px, py, visible) in zip(names, sample.parts, strict=False):
        if not visible:
            continue
        if half is not None:
            cx, cy = px - 0.5, py - 0.5  # annotated centre of the pixel the token is centred on
            box = [cx - half[0], cy - half[0], cx + half[1], cy + half[1]]
        else:
            r = 36 / 224 * min(x1 - x0, y1 - y0)
            box = [px - r, py - r, px + r, py + r]
        boxes.append((name, [box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0]))
    return boxes


def sample_region(sample: Sample | None, image: Image.Image, crop_bbox: bool) -> tuple[float, float, float, float]:
    """The region of ``image`` a model trained with ``crop_bbox`` sees (bbox crop for dataset images)."""
    if sample is None:
        return (0.0, 0.0, float(image.width), float(image.height))
    return crop_box(sample, image.size, crop_bbox)


# ----------------------------------------------------------------------------- matched gallery


@dataclass
class Matching:
    """Hungarian matching of a student's prototypes to the teacher's on PMS co-occurrence."""

    student: str
    pms: float
    pairs: dict[int, int]  # teacher prototype -> student prototype
    cooccurrence: np.ndarray  # (mT, mS) images with the same argmin location
    n_images: int
    extra: dict[str, Any] = field(default_factory=dict)


def match_prototypes(student: str, argmin_t: np.ndarray, argmin_s: np.ndarray, num_locations: int) -> Matching:
    """PMS (paper Algorithm 1) of teacher vs student argmins (N, m) and its Hungarian matching."""
    result = pms(argmin_t, argmin_s, num_locations, return_cooccurrence=True)
    pairs = {int(i): int(j) for i, j in zip(result.row_ind, result.col_ind, strict=True)}
    assert result.cooccurrence is not None
    return Matching(student, float(result.score), pairs, np.asarray(result.cooccurrence), int(argmin_t.shape[0]))
