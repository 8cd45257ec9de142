"""Images as model inputs: decoding, the bbox crop, input geometry, hashing and ``ImageDataset``.

Coordinates follow :mod:`p2p_cli.data.index` (original-image pixels after EXIF orientation). A
model input of side ``S`` is the region ``[x0, x0 + w) × [y0, y0 + h)`` (the whole image, or
the clipped bounding box) resized bilinearly to ``S × S``; a point maps to
``x' = (x - x0) * S / w``, ``y' = (y - y0) * S / h`` (see :func:`input_geometry`). Images are
uint8, RGB, ``(3, S, S)`` as tensors (CHW) and ``(S, S, 3)`` as numpy arrays (HWC).

An unreadable file is a one-line :class:`~p2p_cli.data.index.DataError` naming it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from p2p_cli.data.index import DataError, Sample
from p2p_cli.errors import P2PError


def error_reason(exc: BaseException) -> str:
    """Short reason for a failed read: ``file not found`` or ``<Type>: <first line>``."""
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
"""What PIL raises for a missing, truncated or corrupt image file."""


def open_rgb(path: Path) -> Image.Image:
    """Decode ``path`` fully, apply its EXIF orientation, convert to RGB; :class:`DataError` if it fails."""
    try:
        with Image.open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im).convert("RGB")
    except READ_ERRORS as exc:
        raise DataError(f"{path}: cannot read image ({error_reason(exc)})") from None


@functools.lru_cache(maxsize=65536)
def image_dims(path: Path) -> tuple[int, int]:
    """``(width, height)`` after EXIF orientation, from the header only (cached)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except READ_ERRORS as exc:
        raise DataError(f"{path}: cannot read image ({error_reason(exc)})") from None
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

    def share_cache(self, other: ImageDataset) -> None:
        """Use ``other``'s image cache (same samples, size and crop) instead of filling a second one."""
        self._store, self._filled = other._store, other._filled

    def preload(self, progress: Callable[[int, int], None] | None = None, threads: int = 2,
                disk: bool = False) -> None:
        """Fill the cache now (no-op without ``cache=True``); ``progress(done, total)``.

        ``disk``: read the decoded images from the on-disk cache of :mod:`p2p_cli.data.decoded`
        when an earlier run stored them, else decode them and store them there."""
        if not self.cache or not self.samples:
            return
        from p2p_cli.data.decoded import decoded_cache_path, load_decoded, save_decoded

        path = decoded_cache_path(self.samples, self.image_size, self.crop_bbox) if disk else None
        if path is not None and not self._filled.any():
            stored = load_decoded(path, len(self.samples), self.image_size)
            if stored is not None:
                self._store = stored
                self._filled[:] = True
                return
        todo = [i for i in range(len(self.samples)) if not self._filled[i]]
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for done, _ in enumerate(pool.map(self.load, todo), start=1):
                if progress is not None:
                    progress(done, len(todo))
        if path is not None and todo:
            save_decoded(path, self._store)  # type: ignore[arg-type]


__all__ = [
    "READ_ERRORS", "ImageDataset", "crop_box", "error_reason", "file_sha256", "image_dims", "input_geometry",
    "load_image", "load_image_array", "open_rgb", "parts_in_input",
]
