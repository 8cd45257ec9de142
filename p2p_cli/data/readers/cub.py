"""CUB-200-2011 layout reader (also the layout of the built-in synthetic dataset).

Files, relative to the root (the ``CUB_200_2011`` folder or its parent); ids are positive
integers, fields are separated by whitespace and the last field may contain spaces:

* ``images.txt`` — ``<image_id> <relative_path>``, the path relative to ``images/``.
* ``image_class_labels.txt`` — ``<image_id> <class_id>``.
* ``train_test_split.txt`` — ``<image_id> <is_training_image>`` with ``1`` (train) or ``0`` (test).
* ``classes.txt`` (optional) — ``<class_id> <class_name>``, e.g. ``1 001.Black_footed_Albatross``;
  the ``NNN.`` prefix is dropped. Without it, class names come from the image folders.
* ``bounding_boxes.txt`` (optional) — ``<image_id> <x> <y> <width> <height>`` in pixels.
* ``parts/parts.txt`` (optional) — ``<part_id> <part_name>``.
* ``parts/part_locs.txt`` (optional) — ``<image_id> <part_id> <x> <y> <visible>`` in pixels,
  ``visible`` ``1`` or ``0``; an image without a row for a part has that part invisible.

Class ids map to 0-based labels in increasing id order. The three first files are required;
a malformed line is a :class:`DataError` naming ``file:line`` and the expected form.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from p2p_cli.data.index import Box, DataError, DatasetIndex, Issue, Part, Sample
from p2p_cli.data.readers.common import Reader, class_issues, missing_files

CUB_REQUIRED = ("images.txt", "image_class_labels.txt", "train_test_split.txt")
PartRow = tuple[int, int, float, float, bool]
"""One parsed ``part_locs.txt`` line: ``(image_id, part_id, x, y, visible)``."""


# ----------------------------------------------------------------------------- text tables


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


# ----------------------------------------------------------------------------- CUB


def _cub_root(root: Path) -> Path:
    """Accept the CUB folder itself or its parent holding ``CUB_200_2011/``."""
    if not (root / "images.txt").is_file() and (root / "CUB_200_2011" / "images.txt").is_file():
        return root / "CUB_200_2011"
    return root


def read_cub(root: Path, name: str = "cub") -> tuple[DatasetIndex, list[Issue]]:
    """Index the CUB-200-2011 layout at ``root`` (see the module docstring).

    Boxes and parts are attached when their files exist; ``name`` becomes ``DatasetIndex.name``
    (``"cub"`` or ``"synthetic"``). Missing images and empty classes come back as issues.
    """
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
    issues = missing_files(train + test, str(root / "images.txt"))
    issues += class_issues(class_names, train, test, str(labels_path))
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



READER = Reader(read_cub)
