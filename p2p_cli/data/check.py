"""``p2p data check``: report a dataset's health instead of failing on the first problem.

Checks, in order: layout (index files present and parseable), classes, images per split,
missing files, empty classes, unreadable images (every image is fully decoded), byte-identical
images across train and test (SHA-256 of the file bytes) and within a split, image sizes,
bounding boxes and part annotations. Only a missing root or an unknown dataset kind raise.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps

from p2p_cli.data.images import error_reason
from p2p_cli.data.index import MIN_CLASSES, DataError, DatasetIndex, Sample
from p2p_cli.data.readers import reader_for, scan_index
from p2p_cli.errors import P2PError

Status = Literal["ok", "warn", "error"]
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class CheckRow:
    """One line of the report: check name, ``ok``/``warn``/``error``, human-readable detail."""

    check: str
    status: Status
    detail: str


@dataclass(frozen=True)
class ImageInfo:
    """What decoding one file found: its hash and size, or why it failed."""

    path: Path
    sha256: str | None
    size: tuple[int, int] | None  # (width, height) after EXIF orientation
    error: str | None


def inspect_file(path: Path) -> ImageInfo:
    """Hash the file bytes and fully decode them (no exception escapes)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return ImageInfo(path, None, None, error_reason(exc))
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            size = ImageOps.exif_transpose(im).size
    except Exception as exc:  # PIL raises many types on corrupt data; all mean "unreadable"
        return ImageInfo(path, digest, None, error_reason(exc))
    return ImageInfo(path, digest, size, None)


def check_dataset(kind: str, root: str | os.PathLike | None, *,
                  progress: Callable[[int, int], None] | None = None, threads: int = 2,
                  **synthetic_kwargs: Any) -> list[CheckRow]:
    """Check the dataset and return report rows; never raises on a broken dataset.

    ``progress(done, total)`` is called while images are decoded. A missing root, or an
    unknown ``kind``, is a :class:`P2PError` (there is nothing to report on).
    """
    reader_for(kind)  # unknown kind: P2PError
    if root is not None and not Path(root).expanduser().is_dir():
        raise P2PError(f"{Path(root).expanduser()}: data root not found")
    try:
        index, issues = scan_index(kind, root, **synthetic_kwargs)
    except DataError as exc:
        return [CheckRow("layout", "error", str(exc))]
    rows = [
        CheckRow("layout", "ok", f"{kind} layout at {index.root}"),
        _classes_row(index),
        _count_row(index),
    ]
    for name in ("files", "empty classes"):
        found = [i for i in issues if i.check == name]
        rows.append(_issue_row(name, found) if found else CheckRow(name, "ok", _ok_text(name)))
    rows += [CheckRow(i.check, i.status, i.detail) for i in issues if i.check not in ("files", "empty classes")]

    samples = [s for s in index.train + index.test if s.path.is_file()]
    infos = _inspect_all(samples, progress, threads)
    rows.append(_unreadable_row(infos))
    rows += _duplicate_rows(index, infos)
    rows.append(_size_row(infos))
    if any(s.bbox is not None for s in samples):
        rows.append(_bbox_row(samples, infos))
    if index.part_names:
        rows.append(_parts_row(index, samples, infos))
    return rows


def _ok_text(name: str) -> str:
    return {"files": "every listed image exists", "empty classes": "every class has train and test images"}[name]


def _issue_row(name: str, issues: Sequence[Any]) -> CheckRow:
    status: Status = "error" if any(i.status == "error" for i in issues) else "warn"
    shown = "; ".join(i.detail for i in issues[:MAX_EXAMPLES])
    more = f"; and {len(issues) - MAX_EXAMPLES} more" if len(issues) > MAX_EXAMPLES else ""
    return CheckRow(name, status, f"{len(issues)} problem(s): {shown}{more}")


def _classes_row(index: DatasetIndex) -> CheckRow:
    """Training needs :data:`~p2p_cli.data.index.MIN_CLASSES` classes: fewer is an error here too."""
    if index.num_classes < MIN_CLASSES:
        return CheckRow("classes", "error", f"{index.num_classes} class(es): training needs at least {MIN_CLASSES}")
    return CheckRow("classes", "ok", f"{index.num_classes} classes")


def _count_row(index: DatasetIndex) -> CheckRow:
    per_class = np.bincount([s.label for s in index.train], minlength=index.num_classes)
    spread = f"{per_class.min()}-{per_class.max()} train images per class" if index.num_classes else ""
    status: Status = "ok" if index.train and index.test else "error"
    return CheckRow("images", status, f"train {len(index.train)}, test {len(index.test)} ({spread})")


def _inspect_all(samples: Sequence[Sample], progress: Callable[[int, int], None] | None,
                 threads: int) -> dict[Path, ImageInfo]:
    paths = list(dict.fromkeys(s.path for s in samples))
    out: dict[Path, ImageInfo] = {}
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:  # decoding releases the GIL
        for done, info in enumerate(pool.map(inspect_file, paths), start=1):
            out[info.path] = info
            if progress is not None:
                progress(done, len(paths))
    return out


def _unreadable_row(infos: dict[Path, ImageInfo]) -> CheckRow:
    bad = [i for i in infos.values() if i.error is not None]
    if not bad:
        return CheckRow("unreadable images", "ok", f"all {len(infos)} images decode")
    shown = "; ".join(f"{i.path} ({i.error})" for i in bad[:MAX_EXAMPLES])
    more = f"; and {len(bad) - MAX_EXAMPLES} more" if len(bad) > MAX_EXAMPLES else ""
    return CheckRow("unreadable images", "error", f"{len(bad)} of {len(infos)} images cannot be decoded: {shown}{more}")


def _duplicate_rows(index: DatasetIndex, infos: dict[Path, ImageInfo]) -> list[CheckRow]:
    """Train/test leakage (identical bytes in both splits) and duplicates within a split."""
    by_hash: dict[str, dict[str, list[Path]]] = defaultdict(lambda: {"train": [], "test": []})
    for split in ("train", "test"):
        for s in index.split(split):  # type: ignore[arg-type]
            info = infos.get(s.path)
            if info is not None and info.sha256 is not None:
                by_hash[info.sha256][split].append(s.path)
    leaks = [(g["train"][0], g["test"][0], len(g["test"])) for g in by_hash.values() if g["train"] and g["test"]]
    n_leak = sum(n for *_, n in leaks)
    if leaks:
        shown = "; ".join(f"{te} = {tr}" for tr, te, _ in leaks[:MAX_EXAMPLES])
        leak_row = CheckRow("train/test leakage", "warn",
                            f"{n_leak} test images are byte-identical to training images, e.g. {shown}")
    else:
        leak_row = CheckRow("train/test leakage", "ok", "no test image is byte-identical to a training image")
    dups = [paths for g in by_hash.values() for paths in g.values() if len(paths) > 1]
    if dups:
        shown = "; ".join(" = ".join(str(p) for p in d[:2]) for d in dups[:MAX_EXAMPLES])
        dup_row = CheckRow("duplicates", "warn",
                           f"{sum(len(d) - 1 for d in dups)} redundant copies within a split, e.g. {shown}")
    else:
        dup_row = CheckRow("duplicates", "ok", "no byte-identical images within a split")
    return [leak_row, dup_row]


def _size_row(infos: dict[Path, ImageInfo]) -> CheckRow:
    sizes = np.array([i.size for i in infos.values() if i.size is not None], dtype=np.int64).reshape(-1, 2)
    if not len(sizes):
        return CheckRow("image sizes", "warn", "no decodable images")
    w, h = sizes[:, 0], sizes[:, 1]
    tiny = int((np.minimum(w, h) < 32).sum())
    text = (f"width {w.min()}-{w.max()} (median {int(np.median(w))}), "
            f"height {h.min()}-{h.max()} (median {int(np.median(h))})")
    if tiny:
        return CheckRow("image sizes", "warn", f"{text}; {tiny} images have a side under 32 px")
    return CheckRow("image sizes", "ok", text)


def _bbox_row(samples: Sequence[Sample], infos: dict[Path, ImageInfo]) -> CheckRow:
    with_box = [s for s in samples if s.bbox is not None]
    bad = []
    for s in with_box:
        x, y, bw, bh = s.bbox  # type: ignore[misc]
        info = infos.get(s.path)
        if bw < 1 or bh < 1:
            bad.append(f"{s.path} (empty box {bw:g}x{bh:g})")
        elif info is not None and info.size is not None:
            w, h = info.size
            if x < -1 or y < -1 or x + bw > w + 1 or y + bh > h + 1:
                bad.append(f"{s.path} (box {x:g},{y:g},{bw:g},{bh:g} outside {w}x{h})")
    missing = len(samples) - len(with_box)
    note = f"; {missing} images have no box" if missing else ""
    if bad:
        return CheckRow("bounding boxes", "warn", f"{len(bad)} of {len(with_box)} boxes are empty or "
                        f"exceed their image (they are clipped), e.g. {'; '.join(bad[:MAX_EXAMPLES])}{note}")
    status: Status = "warn" if missing else "ok"
    return CheckRow("bounding boxes", status, f"{len(with_box)} boxes inside their images{note}")


def _parts_row(index: DatasetIndex, samples: Sequence[Sample], infos: dict[Path, ImageInfo]) -> CheckRow:
    names = index.part_names or []
    visible = total = outside = 0
    for s in samples:
        info = infos.get(s.path)
        for x, y, vis in s.parts or ():
            total += 1
            if vis:
                visible += 1
                if info is not None and info.size is not None and not (
                        0 <= x <= info.size[0] and 0 <= y <= info.size[1]):
                    outside += 1
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    text = f"{len(names)} parts ({shown}); {visible} of {total} annotations visible"
    if outside:
        return CheckRow("parts", "warn", f"{text}; {outside} visible points lie outside their image")
    return CheckRow("parts", "ok", text)
