"""Built-in synthetic dataset: objects whose class is a combination of visual parts.

What an image shows (a body with three part slots; a class is one part token per slot, any
two classes sharing at most one) and how it is drawn is in :mod:`p2p_cli.data.synthetic_render`.
This module validates the parameters, writes the dataset and keeps the cache.

The dataset is written in the CUB-200-2011 layout, so the CUB reader and the part-based
metrics run on it unchanged (ids are 1-based, one line per image or part):

* ``images/NNN.<class name>/img_KKKK.png`` — RGB, ``image_size × image_size``, uncompressed PNG.
* ``images.txt`` (``<image_id> <path>``), ``image_class_labels.txt`` (``<image_id> <class_id>``),
  ``train_test_split.txt`` (``<image_id> 1|0``), ``classes.txt`` (``<class_id> NNN.<name>``).
* ``bounding_boxes.txt`` — ``<image_id> <x> <y> <w> <h>``: the box around body and visible parts.
* ``parts/parts.txt`` (``<part_id> <name>``: top, left, right) and ``parts/part_locs.txt``
  (``<image_id> <part_id> <x> <y> <visible>``, ``0.0 0.0 0`` for a missing part).
* ``synthetic.json`` — the parameters, rendering preset and every class's code (:func:`describe`).

Coordinates: pixels of the saved image, origin at the top-left corner of the image, x to the
right, y down; pixel ``(i, j)`` covers ``[i, i+1) × [j, j+1)``.

Generation is deterministic: every image draws from its own ``numpy`` generator seeded by
``(seed, class, image)``, so the output is bit-identical for the same parameters.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from p2p_cli.data.synthetic_render import (
    COLOURS,
    OUTLINE,
    PART_NAMES,
    PRESETS,
    SHAPES,
    SLOT_OFFSETS,
    Preset,
    Rendered,
    Token,
    class_codes,
    class_names,
    draw_token,
    render,
    slot_alphabets,
    token_list,
)
from p2p_cli.errors import P2PError, did_you_mean

GENERATOR_VERSION = 1
"""Bump whenever the output for the same parameters changes: it is part of the cache key."""

PNG_COMPRESS_LEVEL = 0
"""Stored PNGs are uncompressed: the noisy images barely compress (level 1: −27 % size) and
decode 3.5× faster uncompressed (0.2 ms vs 0.7 ms at 112 px, the cost of every evaluation and
push pass). Part of the cache key (same pixels, different files)."""
COMPLETE_MARKER = ".p2p-complete"
"""Written last inside a finished dataset directory; a directory without it is never trusted."""

DEFAULT_PARAMS: dict[str, Any] = {
    "preset": "easy",
    "num_classes": 10,
    "train_per_class": 100,
    "test_per_class": 40,
    "image_size": 112,
    "seed": 0,
}


# ----------------------------------------------------------------------------- writing


BOUNDS: dict[str, tuple[int, int]] = {"num_classes": (2, 1000), "train_per_class": (1, 100_000),
                                     "test_per_class": (1, 100_000), "image_size": (48, 1024), "seed": (0, 2**32 - 1)}
"""Inclusive bounds of the integer options (the config's ``synthetic_*`` keys and ``p2p data
synthesize``'s flags use the same)."""


def normalize_params(**params: Any) -> dict[str, Any]:
    """Fill defaults and validate; unknown keys and bad values are :class:`P2PError`."""
    for key in params:
        if key not in DEFAULT_PARAMS:
            raise P2PError(
                f"unknown synthetic dataset option '{key}'{did_you_mean(key, DEFAULT_PARAMS)}; "
                f"valid options: {', '.join(DEFAULT_PARAMS)}"
            )
    out = {**DEFAULT_PARAMS, **{k: v for k, v in params.items() if v is not None}}
    if out["preset"] not in PRESETS:
        raise P2PError(
            f"unknown synthetic preset '{out['preset']}'{did_you_mean(str(out['preset']), PRESETS)}; "
            f"choose from {', '.join(PRESETS)}"
        )
    for key, (low, high) in BOUNDS.items():
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
            raise P2PError(f"synthetic option {key}={value!r} must be an integer in [{low}, {high}]")
        out[key] = int(value)
    slot_alphabets(out["num_classes"])  # raises for too many classes
    return out


def params_key(params: dict[str, Any]) -> str:
    """Short stable hash of normalised parameters (and the generator version)."""
    blob = json.dumps({**params, "generator_version": GENERATOR_VERSION, "png_compress_level": PNG_COMPRESS_LEVEL},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _image_rng(seed: int, class_idx: int, image_idx: int) -> np.random.Generator:
    return np.random.default_rng([seed, class_idx, image_idx, GENERATOR_VERSION])


def _write_tree(root: Path, params: dict[str, Any]) -> None:
    """Generate every image and index file into the existing empty directory ``root``."""
    preset = PRESETS[params["preset"]]
    n_cls, size, seed = params["num_classes"], params["image_size"], params["seed"]
    n_train, n_test = params["train_per_class"], params["test_per_class"]
    alphabets = slot_alphabets(n_cls)
    codes = class_codes(n_cls, seed)
    names = class_names(codes, alphabets)

    jobs = []
    for c, name in enumerate(names):
        folder = f"{c + 1:03d}.{name}"
        (root / "images" / folder).mkdir(parents=True)
        jobs += [(c, k, f"{folder}/img_{k:04d}.png") for k in range(n_train + n_test)]

    def make(job: tuple[int, int, str]) -> tuple[tuple[float, ...], tuple[tuple[float, float, bool], ...]]:
        c, k, rel = job
        rendered = render(codes[c], alphabets, size, preset, _image_rng(seed, c, k))
        Image.fromarray(rendered.pixels).save(root / "images" / rel, compress_level=PNG_COMPRESS_LEVEL)
        return rendered.bbox, rendered.parts

    # PNG encoding and drawing release the GIL: two threads nearly halve the wall time.
    # Every image has its own generator, so the output does not depend on scheduling.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        results = list(pool.map(make, jobs))

    images, labels, split, boxes, locs = [], [], [], [], []
    for image_id, ((c, k, rel), (bbox, parts)) in enumerate(zip(jobs, results, strict=True), start=1):
        images.append(f"{image_id} {rel}")
        labels.append(f"{image_id} {c + 1}")
        split.append(f"{image_id} {1 if k < n_train else 0}")
        boxes.append(f"{image_id} " + " ".join(f"{v:.1f}" for v in bbox))
        for p, (x, y, vis) in enumerate(parts):
            locs.append(f"{image_id} {p + 1} {x:.1f} {y:.1f} {int(vis)}")

    def write(rel: str, lines: list[str]) -> None:
        (root / rel).write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    (root / "parts").mkdir()
    write("images.txt", images)
    write("image_class_labels.txt", labels)
    write("train_test_split.txt", split)
    write("bounding_boxes.txt", boxes)
    write("classes.txt", [f"{c + 1} {c + 1:03d}.{n}" for c, n in enumerate(names)])
    write("parts/parts.txt", [f"{p + 1} {n}" for p, n in enumerate(PART_NAMES)])
    write("parts/part_locs.txt", locs)
    meta = describe(params, codes, alphabets, names)
    (root / "synthetic.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def describe(params: dict[str, Any], codes: list[tuple[int, int, int]], alphabets: list[list[Token]],
             names: list[str]) -> dict[str, Any]:
    """The ``synthetic.json`` document: parameters, rendering preset and every class's code."""
    return {
        "generator": "p2p-synthetic",
        "generator_version": GENERATOR_VERSION,
        "params": params,
        "preset_config": asdict(PRESETS[params["preset"]]),
        "coordinates": "pixels of the saved image, origin top-left, pixel (i, j) covers [i, i+1)",
        "part_names": list(PART_NAMES),
        "slot_offsets": {n: list(o) for n, o in zip(PART_NAMES, SLOT_OFFSETS, strict=True)},
        "classes": [
            {
                "id": c + 1,
                "name": name,
                "parts": {PART_NAMES[s]: asdict(alphabets[s][v]) for s, v in enumerate(code)},
            }
            for c, (code, name) in enumerate(zip(codes, names, strict=True))
        ],
    }


def synthesize(root: str | os.PathLike, *, preset: str = "easy", num_classes: int = 10,
               train_per_class: int = 100, test_per_class: int = 40, image_size: int = 112,
               seed: int = 0, overwrite: bool = False) -> Path:
    """Write the synthetic dataset to ``root`` (CUB layout) and return ``root``.

    The tree is generated in a temporary sibling directory, completed with the
    :data:`COMPLETE_MARKER` file, and renamed onto ``root``: a killed generation never leaves a
    half-written dataset at ``root``. An existing non-empty ``root`` is an error unless
    ``overwrite``.
    """
    params = normalize_params(preset=preset, num_classes=num_classes, train_per_class=train_per_class,
                              test_per_class=test_per_class, image_size=image_size, seed=seed)
    root = Path(root).expanduser().resolve()
    if root.exists():
        if not root.is_dir():
            raise P2PError(f"{root}: exists and is not a directory")
        if any(root.iterdir()) and not overwrite:
            raise P2PError(f"{root}: directory is not empty (use --overwrite to replace it)")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        _write_tree(tmp, params)
        (tmp / COMPLETE_MARKER).write_text(params_key(params) + "\n", encoding="utf-8")
        _replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename ``src`` onto ``dst``, first moving an existing ``dst`` aside and deleting it."""
    if dst.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        os.replace(dst, trash / "old")
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(src, dst)


def is_complete(root: Path) -> bool:
    """True when ``root`` holds a finished generation (its marker was written last)."""
    return (root / COMPLETE_MARKER).is_file()


def default_cache_dir() -> Path:
    """``$P2P_CACHE_DIR`` if set, else ``~/.cache/p2p``."""
    env = os.environ.get("P2P_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "p2p"


def synthetic_cache_path(**params: Any) -> Path:
    """Where :func:`ensure_synthetic` keeps the dataset for ``params`` (may not exist yet)."""
    return default_cache_dir() / "synthetic" / params_key(normalize_params(**params))


def ensure_synthetic(**params: Any) -> Path:
    """Return the cached dataset for ``params`` (see :data:`DEFAULT_PARAMS`), generating it once.

    Lives in ``<cache>/synthetic/<hash of params>/``. Generation goes to a temporary sibling
    that is renamed into place only after the completion marker is written, so concurrent or
    killed generations never expose a partial dataset. If two processes race, the first rename
    wins and the other's copy (identical by determinism) is discarded.
    """
    norm = normalize_params(**params)
    target = default_cache_dir() / "synthetic" / params_key(norm)
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _write_tree(tmp, norm)
        (tmp / COMPLETE_MARKER).write_text(params_key(norm) + "\n", encoding="utf-8")
        if is_complete(target):  # another process finished meanwhile
            return target
        if target.exists():  # leftover without marker (e.g. copied by hand): never trusted
            _replace_dir(tmp, target)
        else:
            try:
                os.rename(tmp, target)
            except OSError:
                if not is_complete(target):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _remove_stale_temps(folder: Path, max_age_s: float = 3600.0) -> None:
    """Delete temporary generation dirs older than ``max_age_s`` (left by killed runs)."""
    now = time.time()
    for entry in folder.glob(".*.tmp-*"):
        try:
            if entry.is_dir() and now - entry.stat().st_mtime > max_age_s:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


__all__ = [
    "COLOURS", "COMPLETE_MARKER", "DEFAULT_PARAMS", "GENERATOR_VERSION", "OUTLINE", "PART_NAMES",
    "PNG_COMPRESS_LEVEL", "PRESETS", "SHAPES", "SLOT_OFFSETS", "Preset", "Rendered", "Token", "class_codes",
    "class_names", "default_cache_dir", "describe", "draw_token", "ensure_synthetic", "is_complete",
    "normalize_params", "params_key", "render", "slot_alphabets", "synthesize", "synthetic_cache_path",
    "token_list",
]
