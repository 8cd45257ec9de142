"""Dataset indexes (CUB-200-2011, Stanford Cars, image folders, synthetic) and the image dataset.

Coordinate convention (boxes, part locations): pixels of the *original* image after EXIF
orientation, origin at its top-left corner, x to the right, y down, pixel ``(i, j)`` covering
``[i, i+1) × [j, j+1)``. A model input of side ``S`` is the region ``[x0, x0 + w) × [y0, y0 + h)``
(the whole image, or the clipped bounding box) resized to ``S × S``; a point maps to
``x' = (x - x0) * S / w``, ``y' = (y - y0) * S / h`` (see :func:`input_geometry`).

Every problem with the user's files is a :class:`DataError` (a :class:`P2PError`) whose message
is one line naming the file and what was expected.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from p2p_cli.errors import P2PError, did_you_mean

KINDS: tuple[str, ...] = ("cub", "cars", "folder", "synthetic")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})
CUB_REQUIRED = ("images.txt", "image_class_labels.txt", "train_test_split.txt")

Box = tuple[float, float, float, float]
Part = tuple[float, float, bool]


# ----------------------------------------------------------------------------- errors


_WORKER_PREFIX = re.compile(r"^Caught (\w+) in DataLoader worker process")


def _strip_worker_wrapper(message: str) -> str:
    """Recover the original one-line message from a DataLoader worker re-raise.

    ``torch`` re-raises a worker exception as ``type(exc)("Caught <Type> in DataLoader worker
    process N.\\nOriginal Traceback ...\\n<module>.<Type>: <message>")``; return ``<message>``.
    Any other text is returned unchanged.
    """
    head = _WORKER_PREFIX.match(message)
    if head is None:
        return message
    pattern = re.compile(rf"^(?:[\w.]+\.)?{re.escape(head.group(1))}: (.*)$", re.MULTILINE)
    found = pattern.findall(message)
    return found[-1].strip() if found else message.splitlines()[0]


class DataError(P2PError):
    """A problem with the dataset files; ``str(err)`` is always one line naming the file.

    DataLoader workers re-raise exceptions in the main process by calling the exception type
    with the worker's formatted traceback; this constructor strips that wrapper, so a
    ``DataError`` raised inside a worker surfaces in the main process as the same one-line
    ``DataError`` (the worker traceback is kept in :attr:`worker_traceback`).
    """

    def __init__(self, message: str = "") -> None:
        clean = _strip_worker_wrapper(str(message))
        self.worker_traceback: str | None = str(message) if clean != message else None
        super().__init__(clean)


def unwrap_worker_error(exc: BaseException) -> P2PError | None:
    """The user-facing :class:`P2PError` behind ``exc``, or ``None`` if it is not one.

    Follows ``__cause__``/``__context__`` and strips the DataLoader worker wrapper from any
    ``P2PError`` subclass (``DataError`` already does this itself).
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, P2PError):
            text = str(cur)
            clean = _strip_worker_wrapper(text)
            return cur if clean == text else P2PError(clean)
        cur = cur.__cause__ or cur.__context__
    return None


# ----------------------------------------------------------------------------- index types


@dataclass(frozen=True)
class Sample:
    """One image of a dataset index.

    ``bbox``: ``(x, y, w, h)`` of the object in original pixels, or ``None``.
    ``parts``: one ``(x, y, visible)`` per part, in part-id order, or ``None`` without part
    annotations; an invisible part has ``visible=False`` (its x, y are meaningless).
    """

    path: Path
    label: int
    bbox: Box | None = None
    parts: tuple[Part, ...] | None = None


@dataclass
class DatasetIndex:
    """Train/test samples of a dataset; labels index ``classes`` (0-based)."""

    name: str
    root: Path
    classes: list[str]
    train: list[Sample]
    test: list[Sample]
    part_names: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: Literal["train", "test"]) -> list[Sample]:
        return self.train if name == "train" else self.test


@dataclass(frozen=True)
class Issue:
    """A non-fatal problem found while indexing; ``load_index`` raises on ``error`` ones."""

    check: str
    status: Literal["warn", "error"]
    detail: str


# ----------------------------------------------------------------------------- parsing helpers


def _require_file(path: Path, expected: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected {expected})")
    return path


def _read_rows(path: Path, n_fields: int, form: str) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` of a whitespace table; the last field keeps its spaces."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a BOM
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (expected lines '{form}')") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=n_fields - 1)
        if len(fields) != n_fields:
            raise DataError(f"{path}:{lineno}: expected '{form}', got {line.strip()!r}")
        yield lineno, fields


def _num(path: Path, lineno: int, value: str, kind: type, form: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise DataError(
            f"{path}:{lineno}: expected '{form}', got {value!r} where a number belongs"
        ) from None


def _read_id_map(path: Path, form: str, value_type: type = str) -> dict[int, tuple[int, Any]]:
    """``{id: (line, value)}`` from a two-column ``<id> <value>`` file; duplicate ids are errors."""
    out: dict[int, tuple[int, Any]] = {}
    for lineno, (key, value) in _read_rows(path, 2, form):
        ident = _num(path, lineno, key, int, form)
        if ident in out:
            raise DataError(f"{path}:{lineno}: duplicate id {ident} (first on line {out[ident][0]})")
        out[ident] = (lineno, value if value_type is str else _num(path, lineno, value, value_type, form))
    return out


def _display_name(folder_name: str) -> str:
    """``001.Black_footed_Albatross`` -> ``Black_footed_Albatross``."""
    return re.sub(r"^\d+\.", "", folder_name.strip())


def _class_issues(classes: list[str], train: list[Sample], test: list[Sample], where: str) -> list[Issue]:
    n_train = np.bincount([s.label for s in train], minlength=len(classes))
    n_test = np.bincount([s.label for s in test], minlength=len(classes))
    issues = []
    for k, name in enumerate(classes):
        if n_train[k] + n_test[k] == 0:
            issues.append(Issue("empty classes", "error", f"{where}: class '{name}' has no images"))
        elif n_train[k] == 0:
            issues.append(Issue("empty classes", "error", f"{where}: class '{name}' has no training images"))
        elif n_test[k] == 0:
            issues.append(Issue("empty classes", "warn", f"{where}: class '{name}' has no test images"))
    if not train:
        issues.append(Issue("images", "error", f"{where}: no training images"))
    if not test:
        issues.append(Issue("images", "error", f"{where}: no test images"))
    return issues


def _missing_files(samples: Sequence[Sample], listed_in: str) -> list[Issue]:
    missing = [s.path for s in samples if not s.path.is_file()]
    if not missing:
        return []
    more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
    return [Issue("files", "error", f"{missing[0]}: image listed in {listed_in} not found{more}")]


# ----------------------------------------------------------------------------- CUB


def _cub_root(root: Path) -> Path:
    """Accept the CUB folder itself or its parent holding ``CUB_200_2011/``."""
    if not (root / "images.txt").is_file() and (root / "CUB_200_2011" / "images.txt").is_file():
        return root / "CUB_200_2011"
    return root


def _read_cub(root: Path, name: str = "cub") -> tuple[DatasetIndex, list[Issue]]:
    """CUB-200-2011 layout: ``images.txt`` etc.; bounding boxes and parts when present."""
    root = _cub_root(root)
    layout = "the CUB-200-2011 layout: " + ", ".join(CUB_REQUIRED)
    images = _read_id_map(_require_file(root / "images.txt", layout), "<image_id> <relative_path>")
    labels_path = _require_file(root / "image_class_labels.txt", layout)
    labels = _read_id_map(labels_path, "<image_id> <class_id>", int)
    split_path = _require_file(root / "train_test_split.txt", layout)
    split = _read_id_map(split_path, "<image_id> <is_training_image 1|0>", int)

    class_ids, class_names = _cub_classes(root, images, labels)
    boxes = _cub_boxes(root / "bounding_boxes.txt", images)
    part_names, parts = _cub_parts(root / "parts", images)

    train, test = [], []
    for image_id, (lineno, rel) in images.items():
        if image_id not in labels:
            raise DataError(f"{labels_path}: no class for image id {image_id} (images.txt line {lineno})")
        if image_id not in split:
            raise DataError(f"{split_path}: no split for image id {image_id} (images.txt line {lineno})")
        label_line, cid = labels[image_id]
        if cid not in class_ids:
            raise DataError(f"{labels_path}:{label_line}: class id {cid} is not in classes.txt")
        split_line, is_train = split[image_id]
        if is_train not in (0, 1):
            raise DataError(f"{split_path}:{split_line}: expected is_training_image 1 or 0, got {is_train}")
        sample = Sample(root / "images" / rel.strip(), class_ids[cid], boxes.get(image_id),
                        parts.get(image_id) if parts is not None else None)
        (train if is_train else test).append(sample)

    index = DatasetIndex(name, root, class_names, train, test, part_names)
    issues = _missing_files(train + test, str(root / "images.txt"))
    issues += _class_issues(class_names, train, test, str(labels_path))
    return index, issues


def _cub_classes(root: Path, images: dict[int, tuple[int, str]],
                 labels: dict[int, tuple[int, int]]) -> tuple[dict[int, int], list[str]]:
    """Map CUB class ids to 0-based labels; names from ``classes.txt`` or the image folders."""
    path = root / "classes.txt"
    if path.is_file():
        table = _read_id_map(path, "<class_id> <class_name>")
        ids = sorted(table)
        return {cid: k for k, cid in enumerate(ids)}, [_display_name(table[c][1]) for c in ids]
    ids = sorted({cid for _, cid in labels.values()})
    folder: dict[int, str] = {}
    for image_id, (_, cid) in labels.items():
        if cid not in folder and image_id in images:
            folder[cid] = _display_name(Path(images[image_id][1].strip()).parent.name or f"class_{cid}")
    return {cid: k for k, cid in enumerate(ids)}, [folder.get(c, f"class_{c}") for c in ids]


def _cub_boxes(path: Path, images: dict[int, tuple[int, str]]) -> dict[int, Box]:
    if not path.is_file():
        return {}
    form = "<image_id> <x> <y> <width> <height>"
    out: dict[int, Box] = {}
    for lineno, fields in _read_rows(path, 5, form):
        image_id = _num(path, lineno, fields[0], int, form)
        box = tuple(_num(path, lineno, v, float, form) for v in fields[1:])
        if image_id not in images:
            raise DataError(f"{path}:{lineno}: image id {image_id} is not in images.txt")
        out[image_id] = box  # type: ignore[assignment]
    return out


def _cub_parts(folder: Path, images: dict[int, tuple[int, str]]
               ) -> tuple[list[str] | None, dict[int, tuple[Part, ...]] | None]:
    """Part names and per-image ``(x, y, visible)`` tuples, or ``(None, None)`` without parts."""
    locs_path = folder / "part_locs.txt"
    if not locs_path.is_file():
        return None, None
    names_path = folder / "parts.txt"
    table = _read_id_map(names_path, "<part_id> <part_name>") if names_path.is_file() else {}
    rows = _fast_part_rows(locs_path, set(images), set(table))
    if rows is None:
        rows = _checked_part_rows(locs_path, images, table, names_path)
    part_ids = sorted(table) if table else sorted({r[1] for r in rows})
    names = [table[p][1].strip() for p in part_ids] if table else [f"part_{p}" for p in part_ids]
    position = {p: i for i, p in enumerate(part_ids)}
    per_image: dict[int, list[Part]] = {}
    for image_id, part_id, x, y, visible in rows:
        slots = per_image.setdefault(image_id, [(0.0, 0.0, False)] * len(part_ids))
        slots[position[part_id]] = (x, y, visible)
    empty = tuple([(0.0, 0.0, False)] * len(part_ids))
    return names, {i: tuple(per_image[i]) if i in per_image else empty for i in images}


PartRow = tuple[int, int, float, float, bool]


def _fast_part_rows(path: Path, image_ids: set[int], part_ids: set[int]) -> list[PartRow] | None:
    """Vectorised parse of a well-formed ``part_locs.txt`` (CUB: 176k lines); ``None`` if anything
    looks wrong, so that the line-by-line parser can report the exact problem."""
    try:
        text = path.read_text(encoding="utf-8-sig")
        table = np.array(text.split(), dtype=np.float64).reshape(-1, 5)
    except (ValueError, UnicodeDecodeError, OSError):
        return None
    ids = table[:, :2]
    if len(table) != sum(1 for line in text.splitlines() if line.strip()) or np.any(ids != np.round(ids)):
        return None
    rows = [(int(i), int(p), x, y, v > 0) for i, p, x, y, v in table.tolist()]
    if not {r[0] for r in rows} <= image_ids or (part_ids and not {r[1] for r in rows} <= part_ids):
        return None
    return rows


def _checked_part_rows(locs_path: Path, images: dict[int, tuple[int, str]], table: dict[int, tuple[int, str]],
                       names_path: Path) -> list[PartRow]:
    """Line-by-line parse of ``part_locs.txt`` raising a :class:`DataError` at the first bad line."""
    form = "<image_id> <part_id> <x> <y> <visible 1|0>"
    rows: list[PartRow] = []
    for lineno, fields in _read_rows(locs_path, 5, form):
        image_id, part_id = (_num(locs_path, lineno, v, int, form) for v in fields[:2])
        x, y = (_num(locs_path, lineno, v, float, form) for v in fields[2:4])
        visible = _num(locs_path, lineno, fields[4], float, form)
        if image_id not in images:
            raise DataError(f"{locs_path}:{lineno}: image id {image_id} is not in images.txt")
        if table and part_id not in table:
            raise DataError(f"{locs_path}:{lineno}: part id {part_id} is not in {names_path}")
        rows.append((image_id, part_id, x, y, visible > 0))
    return rows


# ----------------------------------------------------------------------------- Stanford Cars


def _find_mat(root: Path, filename: str, hint: str = "") -> Path:
    for folder in (root / "devkit", root):
        if (folder / filename).is_file():
            return folder / filename
    raise DataError(f"{root / 'devkit' / filename}: file not found (Stanford Cars devkit; also looked "
                    f"in {root}){hint}")


def _loadmat(path: Path) -> dict[str, Any]:
    import scipy.io

    try:
        return scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=True)
    except Exception as exc:  # scipy raises many types for a bad file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot read MATLAB file ({reason})") from None


def _cars_images_dir(root: Path, split: str) -> Path:
    """``root/cars_<split>/`` (or the doubly nested ``cars_<split>/cars_<split>/`` of some mirrors)."""
    folder = root / f"cars_{split}"
    nested = folder / f"cars_{split}"
    if nested.is_dir() and not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir()):
        return nested
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found (expected the Stanford Cars images cars_{split}/)")
    return folder


def _cars_annotations(path: Path, images_dir: Path, num_classes: int) -> list[Sample]:
    mat = _loadmat(path)
    if "annotations" not in mat:
        raise DataError(f"{path}: expected a variable 'annotations' (struct array)")
    ann = np.atleast_1d(mat["annotations"])
    needed = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
    names = ann.dtype.names or ()
    lacking = [f for f in needed if f not in names]
    if lacking:
        raise DataError(f"{path}: 'annotations' lacks field(s) {', '.join(lacking)} "
                        f"(expected {', '.join(needed)})")
    samples = []
    for i, rec in enumerate(ann, start=1):
        try:
            fname = str(rec["fname"]).strip()
            cls = int(rec["class"])
            x1, y1, x2, y2 = (float(rec[f]) for f in needed[:4])
        except (TypeError, ValueError):
            raise DataError(f"{path}: annotation {i} has a non-numeric class or box") from None
        if not 1 <= cls <= num_classes:
            raise DataError(f"{path}: annotation {i} ({fname}) has class {cls}, expected 1..{num_classes}")
        # MATLAB 1-based inclusive pixel indices -> 0-based half-open box.
        box = (x1 - 1.0, y1 - 1.0, x2 - x1 + 1.0, y2 - y1 + 1.0)
        samples.append(Sample(images_dir / fname, cls - 1, box, None))
    return samples


def _read_cars(root: Path) -> tuple[DatasetIndex, list[Issue]]:
    """Stanford Cars: ``cars_train/``, ``cars_test/`` and the devkit ``.mat`` files."""
    meta_path = _find_mat(root, "cars_meta.mat")
    meta = _loadmat(meta_path)
    if "class_names" not in meta:
        raise DataError(f"{meta_path}: expected a variable 'class_names' (cell array of strings)")
    classes = [str(c).strip() for c in np.atleast_1d(meta["class_names"]).ravel()]
    if not classes:
        raise DataError(f"{meta_path}: 'class_names' is empty")
    train_annos = _find_mat(root, "cars_train_annos.mat")
    test_hint = ""
    if any((d / "cars_test_annos.mat").is_file() for d in (root, root / "devkit")):
        test_hint = "; cars_test_annos.mat has no labels, get cars_test_annos_withlabels.mat"
    test_annos = _find_mat(root, "cars_test_annos_withlabels.mat", test_hint)
    train = _cars_annotations(train_annos, _cars_images_dir(root, "train"), len(classes))
    test = _cars_annotations(test_annos, _cars_images_dir(root, "test"), len(classes))
    index = DatasetIndex("cars", root, classes, train, test, None)
    issues = _missing_files(train, str(train_annos)) + _missing_files(test, str(test_annos))
    issues += _class_issues(classes, train, test, str(train_annos))
    return index, issues


# ----------------------------------------------------------------------------- image folders


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file())


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_folder(root: Path) -> tuple[DatasetIndex, list[Issue]]:
    """``root/train/<class>/*.jpg`` and ``root/test/<class>/*.jpg``; classes from ``train/``."""
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DataError(f"{root / split}: folder not found (expected {root}/train/<class>/*.jpg "
                            f"and {root}/test/<class>/*.jpg)")
    class_dirs = _class_dirs(root / "train")
    if not class_dirs:
        raise DataError(f"{root / 'train'}: no class folders (expected {root}/train/<class>/*.jpg)")
    classes = [d.name for d in class_dirs]
    label = {name: k for k, name in enumerate(classes)}
    issues: list[Issue] = []
    samples: dict[str, list[Sample]] = {"train": [], "test": []}
    for split in ("train", "test"):
        for d in _class_dirs(root / split):
            if d.name not in label:
                raise DataError(f"{d}: class '{d.name}' is not in {root / 'train'}"
                                f"{did_you_mean(d.name, classes)}")
            files = _image_files(d)
            if not files and split == "train":
                exts = ", ".join(sorted(IMAGE_EXTENSIONS))
                issues.append(Issue("empty classes", "error", f"{d}: class folder has no images ({exts})"))
            samples[split] += [Sample(f, label[d.name]) for f in files]
    index = DatasetIndex("folder", root, classes, samples["train"], samples["test"], None)
    issues += [i for i in _class_issues(classes, index.train, index.test, str(root / "train"))
               if not (i.check == "empty classes" and i.status == "error")]
    return index, issues


# ----------------------------------------------------------------------------- entry points


def scan_index(kind: str, root: str | os.PathLike | None = None,
               **synthetic_kwargs: Any) -> tuple[DatasetIndex, list[Issue]]:
    """Parse a dataset's layout and list its non-fatal problems without raising on them.

    Layout problems that make the index unreadable (missing root or index file, malformed
    line) raise :class:`DataError`; missing images and empty classes come back as issues.
    ``synthetic_kwargs`` only matter for ``kind="synthetic"`` without a root.
    """
    if kind not in KINDS:
        raise P2PError(f"unknown dataset '{kind}'{did_you_mean(kind, KINDS)}; choose from {', '.join(KINDS)}")
    if kind == "synthetic" and root is None:
        from p2p_cli.data.synthetic import ensure_synthetic

        path = ensure_synthetic(**{k: v for k, v in synthetic_kwargs.items() if v is not None})
        return _read_cub(path, "synthetic")
    if root is None:
        raise DataError(f"dataset '{kind}' needs a data root (--data-root)")
    path = Path(root).expanduser()
    if not path.is_dir():
        hint = " (create it with 'p2p data synthesize')" if kind == "synthetic" else ""
        raise DataError(f"{path}: data root not found{hint}")
    if kind == "cub":
        return _read_cub(path, "cub")
    if kind == "synthetic":
        return _read_cub(path, "synthetic")
    if kind == "cars":
        return _read_cars(path)
    return _read_folder(path)


def load_index(kind: str, root: str | os.PathLike | None = None, **synthetic_kwargs: Any) -> DatasetIndex:
    """Index a dataset of ``kind`` (``cub``, ``cars``, ``folder``, ``synthetic``) at ``root``.

    ``synthetic`` without a root generates (once, cached) the built-in dataset from
    ``synthetic_kwargs`` (preset, num_classes, train_per_class, test_per_class, image_size,
    seed); with a root it reads that directory with the CUB reader. Any problem — missing
    root/file, malformed line, missing image, class without training images — is a
    one-line :class:`DataError`.
    """
    index, issues = scan_index(kind, root, **synthetic_kwargs)
    errors = [i for i in issues if i.status == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more problems; run 'p2p data check')" if len(errors) > 1 else ""
        raise DataError(errors[0].detail + more)
    return index


# ----------------------------------------------------------------------------- images


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def open_rgb(path: Path) -> Image.Image:
    """Decode ``path`` fully, apply its EXIF orientation, convert to RGB; :class:`DataError` if it fails."""
    try:
        with Image.open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im).convert("RGB")
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: cannot read image ({_reason(exc)})") from None


@functools.lru_cache(maxsize=65536)
def image_dims(path: Path) -> tuple[int, int]:
    """``(width, height)`` after EXIF orientation, from the header only (cached)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: cannot read image ({_reason(exc)})") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def crop_box(sample: Sample, dims: tuple[int, int], crop_bbox: bool) -> tuple[float, float, float, float]:
    """Source region ``(x0, y0, x1, y1)`` of the model input: the clipped bbox, or the image.

    Falls back to the whole image when cropping is off, there is no box, or the clipped box
    is degenerate (narrower than one pixel).
    """
    w, h = dims
    if crop_bbox and sample.bbox is not None:
        bx, by, bw, bh = sample.bbox
        x0, y0 = min(max(bx, 0.0), w), min(max(by, 0.0), h)
        x1, y1 = min(max(bx + bw, 0.0), w), min(max(by + bh, 0.0), h)
        if x1 - x0 >= 1 and y1 - y0 >= 1:
            return (x0, y0, x1, y1)
    return (0.0, 0.0, float(w), float(h))


def load_image_array(sample: Sample, image_size: int, crop_bbox: bool = False) -> np.ndarray:
    """Like :func:`load_image` but a uint8 numpy ``(S, S, 3)`` (HWC) array, without any torch op
    (decoding threads then never touch torch's thread pool)."""
    im = open_rgb(sample.path)
    box = crop_box(sample, im.size, crop_bbox)
    im = im.resize((image_size, image_size), Image.Resampling.BILINEAR, box=box)
    return np.asarray(im, dtype=np.uint8)


def load_image(sample: Sample, image_size: int, crop_bbox: bool = False) -> torch.Tensor:
    """Decode, orient, optionally crop to the bbox and resize (bilinear): uint8 ``(3, S, S)``."""
    return torch.from_numpy(load_image_array(sample, image_size, crop_bbox).copy()).permute(2, 0, 1).contiguous()


def input_geometry(sample: Sample, image_size: int, crop_bbox: bool = False) -> tuple[float, float, float, float]:
    """``(x0, y0, sx, sy)`` with ``x' = (x - x0) * sx``, ``y' = (y - y0) * sy`` from original
    pixels to model-input pixels (an ``image_size`` square), matching :func:`load_image`."""
    x0, y0, x1, y1 = crop_box(sample, image_dims(sample.path), crop_bbox)
    return (x0, y0, image_size / (x1 - x0), image_size / (y1 - y0))


def parts_in_input(sample: Sample, image_size: int, crop_bbox: bool = False) -> np.ndarray:
    """Part locations in model-input pixels: float32 ``(P, 3)`` rows ``(x', y', visible)``.

    A part is visible only if annotated visible *and* inside the input square
    ``[0, image_size)²`` (a bbox crop can cut it off). Without part annotations: ``(0, 3)``.
    """
    if not sample.parts:
        return np.zeros((0, 3), dtype=np.float32)
    x0, y0, sx, sy = input_geometry(sample, image_size, crop_bbox)
    arr = np.asarray(sample.parts, dtype=np.float64).reshape(-1, 3)
    out = np.empty_like(arr)
    out[:, 0] = (arr[:, 0] - x0) * sx
    out[:, 1] = (arr[:, 1] - y0) * sy
    inside = (out[:, 0] >= 0) & (out[:, 0] < image_size) & (out[:, 1] >= 0) & (out[:, 1] < image_size)
    out[:, 2] = ((arr[:, 2] > 0) & inside).astype(np.float64)
    return out.astype(np.float32)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()


class ImageDataset(Dataset):
    """Images of ``samples`` as model inputs; an epoch is ``repeats`` passes over them.

    ``dataset[i]`` → ``(transform(image), label, base_index)`` with ``base_index = i %
    len(samples)``; ``image`` is the uint8 ``(3, S, S)`` output of :func:`load_image`.

    ``cache=True`` keeps decoded, resized images in one preallocated uint8 tensor
    (``len(samples) × 3 × S × S`` bytes) after their first load. With DataLoader workers each
    worker fills its own copy; call :meth:`preload` in the main process before creating the
    loader so that forked workers share the filled cache instead.

    Unreadable images raise :class:`DataError`; from a DataLoader worker it re-raises in the
    main process as the same one-line ``DataError``.
    """

    def __init__(self, samples: Sequence[Sample], transform: Callable[[torch.Tensor], Any] | None = None, *,
                 image_size: int, crop_bbox: bool = False, repeats: int = 1, cache: bool = False) -> None:
        if repeats < 1:
            raise P2PError(f"repeats must be >= 1, got {repeats}")
        if image_size < 1:
            raise P2PError(f"image_size must be >= 1, got {image_size}")
        self.samples = list(samples)
        self.transform = transform
        self.image_size = int(image_size)
        self.crop_bbox = crop_bbox
        self.repeats = int(repeats)
        self.cache = cache
        self._store: torch.Tensor | None = None
        self._filled = np.zeros(len(self.samples), dtype=bool)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.repeats * len(self.samples)

    def __getstate__(self) -> dict[str, Any]:  # spawn/forkserver workers: locks do not pickle
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]

    def __getitem__(self, i: int) -> tuple[Any, int, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        base = i % len(self.samples)
        image = self.load(base)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.samples[base].label, base

    def load(self, base: int) -> torch.Tensor:
        """The uint8 ``(3, S, S)`` image of ``samples[base]`` (from the cache when enabled)."""
        if not self.cache:
            return load_image(self.samples[base], self.image_size, self.crop_bbox)
        if self._filled[base]:
            return self._store[base].clone()  # type: ignore[index]
        image = load_image(self.samples[base], self.image_size, self.crop_bbox)
        with self._lock:
            if self._store is None:
                s = self.image_size
                self._store = torch.empty((len(self.samples), 3, s, s), dtype=torch.uint8)
            self._store[base] = image
            self._filled[base] = True
        return image.clone()

    def preload(self, progress: Callable[[int, int], None] | None = None, threads: int = 2) -> None:
        """Fill the cache now (no-op without ``cache=True``); ``progress(done, total)``."""
        if not self.cache:
            return
        todo = [i for i in range(len(self.samples)) if not self._filled[i]]
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for done, _ in enumerate(pool.map(self.load, todo), start=1):
                if progress is not None:
                    progress(done, len(todo))


__all__ = [
    "KINDS", "DataError", "DatasetIndex", "ImageDataset", "Issue", "Sample", "crop_box", "file_sha256",
    "image_dims", "input_geometry", "load_image", "load_image_array", "load_index", "open_rgb", "parts_in_input",
    "scan_index", "unwrap_worker_error",
]
