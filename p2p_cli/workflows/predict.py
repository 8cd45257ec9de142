"""``p2p predict``: batched inference over many images, one row per image.

Per image: the predicted class and its probability (softmax of the logits (K,)), and the top-k
prototypes by similarity — each with its similarity, its min distance, the grid cell (h, w) of the
(H, W) feature grid where it matches best, and that cell's box in the image's own pixels. Images
are resized whole to the run's S × S input (no bounding-box crop: a user's image has no box), so
cell (h, w) covers ``[w·W/gw, (w+1)·W/gw) × [h·H/gh, (h+1)·H/gh)`` of a W × H image on a gh × gw grid.

An unreadable file (corrupt, not an image, missing) is reported through ``on_skip`` and skipped;
it never aborts the batch.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from p2p_cli.data.readers import IMAGE_EXTENSIONS
from p2p_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from p2p_cli.errors import P2PError
from p2p_cli.explain.images import model_input, read_image
from p2p_cli.models.maps import patch_box
from p2p_cli.models.runs import LoadedRun, load_run
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.reporter import Reporter


@dataclass(frozen=True)
class PredictRequest:
    model: str
    inputs: list[Path]
    workdir: Path = Path("runs")
    top_k: int = 5
    batch_size: int = 32
    on_skip: Callable[[Skipped], None] | None = None


@dataclass(frozen=True)
class Skipped:
    image: str
    reason: str


@dataclass
class Prediction:
    """One image's row. ``prototypes``: top-k dicts ``{rank, prototype, classes, similarity,
    distance, h, w, box}`` with ``box = [x0, y0, x1, y1]`` in the image's pixels (x1, y1 exclusive)."""

    image: str
    width: int
    height: int
    class_index: int
    class_name: str
    probability: float
    prototypes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PredictResult:
    model: str
    arch: str
    image_size: int
    grid: tuple[int, int] | None
    classes: list[str]
    predictions: list[Prediction]
    skipped: list[Skipped]

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "arch": self.arch, "image_size": self.image_size,
                "grid": list(self.grid) if self.grid else None, "num_classes": len(self.classes),
                "predictions": [_row_json(p) for p in self.predictions],
                "skipped": [asdict(s) for s in self.skipped]}


def _row_json(p: Prediction) -> dict[str, Any]:
    row = asdict(p)
    return {"image": row.pop("image"), "width": row.pop("width"), "height": row.pop("height"),
            "class": row.pop("class_name"), **row}


def collect_images(inputs: Sequence[Path]) -> list[Path]:
    """Files as given (any name: a bad one is skipped later) and, for each folder, the files with an
    image extension under it (recursively, hidden ones excluded), sorted; duplicates once."""
    out: dict[Path, None] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            out.update(dict.fromkeys(found))
        else:
            out[path] = None
    return list(out)


def _batches(items: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def prototype_classes(loaded: LoadedRun) -> list[list[str]]:
    """Per prototype the classes its class identity (m, K) names: a ProtoPNet's own class(es); for a
    ProtoTree the arg-max classes of the leaves below the prototype's node."""
    identity = getattr(loaded.model, "class_identity", None)
    if identity is None:
        return [[] for _ in range(loaded.model.num_prototypes)]
    names = loaded.classes or [str(k) for k in range(identity.shape[1])]
    return [[names[k] for k in torch.nonzero(row > 0).flatten().tolist()] for row in identity.cpu()]


def _rows(loaded: LoadedRun, paths: list[Path], sizes: list[tuple[int, int]], out: Any, top_k: int,
          proto_classes: list[list[str]]) -> list[Prediction]:
    logits = out.logits.float().cpu()
    probs = torch.softmax(logits, dim=1)
    dists = out.distances.float().cpu()  # (B, m, H, W)
    gh, gw = dists.shape[-2:]
    min_d, where = dists.flatten(2).min(dim=2)  # (B, m)
    sims = loaded.model.similarity(min_d)  # ProtoPNet log((d+1)/(d+ε)); ProtoTree exp(−d)
    k = min(top_k, min_d.shape[1])
    s = loaded.image_size
    classes = loaded.classes or [str(c) for c in range(logits.shape[1])]
    rows = []
    for i, path in enumerate(paths):
        width, height = sizes[i]
        cls = int(probs[i].argmax())
        order = torch.argsort(min_d[i], stable=True)[:k]
        protos = []
        for rank, j in enumerate(order.tolist(), start=1):
            h, w = divmod(int(where[i, j]), gw)
            x0, y0, x1, y1 = patch_box((h, w), (gh, gw), s)
            box = [round(x0 * width / s), round(y0 * height / s), round(x1 * width / s), round(y1 * height / s)]
            protos.append({"rank": rank, "prototype": j, "classes": proto_classes[j],
                           "similarity": float(sims[i, j]), "distance": float(min_d[i, j]), "h": h, "w": w,
                           "box": box})
        rows.append(Prediction(str(path), width, height, cls, classes[cls], float(probs[i, cls]), protos))
    return rows


def predict(req: PredictRequest, rt: Runtime, reporter: Reporter) -> PredictResult:
    """Classify every readable image of ``req.inputs`` with ``req.model`` (see the module docstring)."""
    if req.top_k < 1:
        raise P2PError(f"--top-k must be >= 1, got {req.top_k}")
    if req.batch_size < 1:
        raise P2PError(f"--batch-size must be >= 1, got {req.batch_size}")
    paths = collect_images(req.inputs)
    if not paths:
        raise P2PError("no images given (pass image files or folders of images)")
    loaded = load_run(req.model, req.workdir).to(rt.device, channels_last=rt.channels_last)
    s = loaded.image_size
    mean = torch.tensor(IMAGENET_MEAN, device=rt.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=rt.device).view(1, 3, 1, 1)
    proto_classes = prototype_classes(loaded)
    predictions: list[Prediction] = []
    skipped: list[Skipped] = []
    grid: tuple[int, int] | None = None
    with reporter.task("predict", len(paths)) as advance:
        for chunk in _batches(paths, req.batch_size):
            good, sizes, tensors = [], [], []
            for path in chunk:
                try:
                    image = read_image(path)
                except P2PError as exc:
                    skip = Skipped(str(path), str(exc))
                    skipped.append(skip)
                    if req.on_skip is not None:
                        req.on_skip(skip)
                    continue
                good.append(path)
                sizes.append(image.size)
                tensors.append(model_input(image, s))
            if good:
                x = torch.stack(tensors).to(rt.device).float().div_(255.0)
                with torch.no_grad(), rt.autocast():
                    out = loaded.model(rt.images((x - mean) / std))
                grid = tuple(out.distances.shape[-2:])  # type: ignore[assignment]
                predictions += _rows(loaded, good, sizes, out, req.top_k, proto_classes)
            advance(len(chunk))
    return PredictResult(req.model, loaded.arch, s, grid, loaded.classes, predictions, skipped)


# ----------------------------------------------------------------------------- output


def csv_text(result: PredictResult, top_k: int) -> str:
    """One line per image: ``image, width, height, class, class_index, probability`` then per rank r
    ``protoR, protoR_classes, protoR_similarity, protoR_distance, protoR_h, protoR_w, protoR_x0 … protoR_y1``."""
    k = max((len(p.prototypes) for p in result.predictions), default=top_k)
    head = ["image", "width", "height", "class", "class_index", "probability"]
    for r in range(1, k + 1):
        head += [f"proto{r}{s}" for s in ("", "_classes", "_similarity", "_distance", "_h", "_w",
                                           "_x0", "_y0", "_x1", "_y1")]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(head)
    for p in result.predictions:
        row: list[Any] = [p.image, p.width, p.height, p.class_name, p.class_index, repr(p.probability)]
        for hit in p.prototypes:
            row += [hit["prototype"], ";".join(hit["classes"]), repr(hit["similarity"]), repr(hit["distance"]),
                    hit["h"], hit["w"], *hit["box"]]
        writer.writerow(row)
    return buf.getvalue()


def json_text(result: PredictResult) -> str:
    return json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n"
