"""``p2p data prepare``: CUB-200-2011 or Stanford Cars → an image-folder dataset.

The preprocessing ProtoPNet's users do before training (Chen et al., NeurIPS 2019): split by the
official split (CUB's ``train_test_split.txt``, the Cars devkit's train and test annotations)
and, with ``crop``, crop every image to its bounding box. The result is
``OUT/train/<class>/*.jpg`` and ``OUT/test/<class>/*.jpg``, which ``--dataset folder`` reads.

Class folders are ``NNN.<name>`` with NNN the 1-based class id, so sorting them (as the folder
reader does) keeps the dataset's class order; for CUB these are its own folder names
(``001.Black_footed_Albatross``). Without ``crop`` the files are copied byte for byte; with it
the crop is re-encoded as JPEG (quality 95) after applying EXIF orientation, and a box that
leaves the image is clipped to it. ``OUT/prepare.json`` records the source, the options and the
counts.

The folder is built next to ``OUT`` under a temporary name and renamed into place at the end,
so an interrupted run leaves no half-written dataset; an existing non-empty ``OUT`` is replaced
only with ``overwrite``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from p2p_cli.data.images import crop_box, open_rgb
from p2p_cli.data.index import DatasetIndex, Sample
from p2p_cli.data.readers import load_index
from p2p_cli.errors import P2PError

KINDS = ("cub", "cars")
JPEG_QUALITY = 95


@dataclass(frozen=True)
class PrepareResult:
    out: Path
    kind: str
    crop: bool
    classes: int
    train: int
    test: int


def class_folder(k: int, name: str) -> str:
    """``NNN.<name>`` for class ``k`` (0-based); path separators and control characters become ``-``."""
    safe = re.sub(r"[\\/\x00-\x1f]", "-", name.strip()) or f"class_{k + 1}"
    return f"{k + 1:03d}.{safe}"


def _check_out(out: Path, overwrite: bool, source: Path) -> None:
    if out.exists() and not out.is_dir():
        raise P2PError(f"'{out}' exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise P2PError(f"'{out}' exists and is not empty; pass --overwrite to replace it")
    src, dst = source.resolve(), out.resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        raise P2PError(f"--out '{out}' must lie outside the dataset root '{source}' (and not contain it)")


def _write_sample(sample: Sample, dst: Path, crop: bool) -> None:
    if not crop or sample.bbox is None:
        shutil.copyfile(sample.path, dst)
        return
    im = open_rgb(sample.path)
    x0, y0, x1, y1 = crop_box(sample, im.size, True)
    im.crop((round(x0), round(y0), round(x1), round(y1))).save(dst, format="JPEG", quality=JPEG_QUALITY)


def _target_name(sample: Sample, crop: bool, used: set[str]) -> str:
    name = sample.path.stem + (".jpg" if crop and sample.bbox is not None else sample.path.suffix.lower())
    stem, suffix, n = Path(name).stem, Path(name).suffix, 1
    while name in used:  # two sources with one name in one class folder: keep both
        n += 1
        name = f"{stem}_{n}{suffix}"
    used.add(name)
    return name


def _build(index: DatasetIndex, tmp: Path, crop: bool, progress: Callable[[int], None] | None) -> None:
    folders = [class_folder(k, name) for k, name in enumerate(index.classes)]
    for split in ("train", "test"):
        used: dict[int, set[str]] = {}
        for folder in folders:
            (tmp / split / folder).mkdir(parents=True, exist_ok=True)
        for sample in index.split(split):  # type: ignore[arg-type]
            name = _target_name(sample, crop, used.setdefault(sample.label, set()))
            _write_sample(sample, tmp / split / folders[sample.label] / name, crop)
            if progress is not None:
                progress(1)


def prepare_dataset(kind: str, root: str | Path, out: str | Path, *, crop: bool = False, overwrite: bool = False,
                    progress: Callable[[int], None] | None = None) -> PrepareResult:
    """Write the image-folder version of the ``kind`` dataset at ``root`` into ``out`` (see the
    module docstring). ``progress(n)`` is called after each image."""
    if kind not in KINDS:
        raise P2PError(f"cannot prepare '{kind}': choose cub or cars")
    root, out = Path(root).expanduser(), Path(out).expanduser()
    _check_out(out, overwrite, root)
    index = load_index(kind, root)
    if crop and not any(s.bbox for s in index.train + index.test):
        raise P2PError(f"{root}: --crop needs bounding boxes, and this dataset has none"
                       + (" (bounding_boxes.txt)" if kind == "cub" else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _build(index, tmp, crop, progress)
        record = {"source": str(index.root), "kind": kind, "crop": crop, "classes": index.classes,
                  "train": len(index.train), "test": len(index.test)}
        (tmp / "prepare.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o777 & ~_umask())
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PrepareResult(out, kind, crop, index.num_classes, len(index.train), len(index.test))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` onto ``out``; an existing ``out`` is moved aside first and deleted after."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old / out.name, out)  # put the old one back
        raise
    shutil.rmtree(old, ignore_errors=True)


def prepare_summary(result: PrepareResult) -> str:
    what = "cropped to bounding boxes" if result.crop else "copied"
    return (f"{result.out}: {result.kind} → {result.classes} classes, {result.train} train + {result.test} test "
            f"images ({what}); use --dataset folder --data-root {result.out}")
