"""Stanford Cars reader (Krause et al. 2013): image folders plus the devkit ``.mat`` files.

Layout under the root (the devkit files may also sit directly in the root):

* ``cars_train/*.jpg`` and ``cars_test/*.jpg`` (some mirrors nest them as
  ``cars_train/cars_train/``).
* ``devkit/cars_meta.mat`` — variable ``class_names``: cell array of the 196 class names.
* ``devkit/cars_train_annos.mat`` and ``devkit/cars_test_annos_withlabels.mat`` — variable
  ``annotations``: struct array with fields ``bbox_x1, bbox_y1, bbox_x2, bbox_y2`` (MATLAB
  1-based, inclusive pixel indices), ``class`` (1-based index into ``class_names``) and
  ``fname`` (file name inside ``cars_<split>/``). The devkit's ``cars_test_annos.mat`` has no
  labels and is not enough.

Boxes become ``(x, y, w, h)`` in the 0-based half-open convention of
:mod:`p2p_cli.data.index`; there are no part annotations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from p2p_cli.data.index import DataError, DatasetIndex, Issue, Sample
from p2p_cli.data.readers.common import IMAGE_EXTENSIONS, Reader, class_issues, missing_files


def _find_mat(root: Path, filename: str, hint: str = "") -> Path:
    """``root/devkit/filename`` or else ``root/filename``; :class:`DataError` (plus ``hint``) if neither exists."""
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
    """Samples of one ``annotations`` struct array, with 0-based labels and ``(x, y, w, h)`` boxes."""
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


def read_cars(root: Path) -> tuple[DatasetIndex, list[Issue]]:
    """Index Stanford Cars at ``root``: ``cars_train/``, ``cars_test/`` and the devkit ``.mat`` files."""
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
    issues = missing_files(train, str(train_annos)) + missing_files(test, str(test_annos))
    issues += class_issues(classes, train, test, str(train_annos))
    return index, issues


READER = Reader(read_cars)
