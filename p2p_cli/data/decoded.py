"""Decoded images kept on disk between runs: one uint8 tensor file per (file list, size, crop).

With ``cache_images`` a run decodes every image once into memory
(:meth:`~p2p_cli.data.images.ImageDataset.preload`). A pipeline of several commands on the same
data (the quickstart: teacher, two students, pruning, evaluation) would decode the same files
again in each; this cache stores the decoded, resized ``(N, 3, S, S)`` uint8 tensor as one
safetensors file under ``<cache dir>/decoded/`` (``$P2P_CACHE_DIR``, else ``~/.cache/p2p``) and
reads it back in one sequential read. The key covers every file's path, label, box, size and
modification time (:func:`files_fingerprint`), the input size and the crop, so a changed image
is decoded again. Files above :data:`MAX_BYTES` are not written (memory, not time, is then the
limit).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from p2p_cli.data.index import Sample

__all__ = ["DECODED_VERSION", "MAX_BYTES", "decoded_cache_path", "files_fingerprint", "load_decoded",
           "save_decoded"]

DECODED_VERSION = 1
"""Part of every key: bump when decoding or resizing changes its output."""

MAX_BYTES = 2 << 30
"""Largest tensor (bytes) stored: 2 GiB."""


def files_fingerprint(samples: Sequence[Sample]) -> str:
    """Hash of a file list: path, label, box, size and mtime of every image (16 hex digits)."""
    h = hashlib.sha256()
    for s in samples:
        try:
            st = os.stat(s.path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{s.path}\t{s.label}\t{s.bbox}\t{stamp}\n".encode())
    return h.hexdigest()[:16]


def decoded_cache_path(samples: Sequence[Sample], image_size: int, crop_bbox: bool,
                       root: Path | None = None) -> Path:
    """Where the decoded tensor of ``samples`` at ``image_size`` (and ``crop_bbox``) is kept."""
    from p2p_cli.data.synthetic import default_cache_dir

    key = f"v{DECODED_VERSION}:{files_fingerprint(samples)}:{int(image_size)}:{int(bool(crop_bbox))}"
    name = hashlib.sha256(key.encode()).hexdigest()[:24]
    return (root or default_cache_dir()) / "decoded" / f"{name}.safetensors"


def load_decoded(path: Path, count: int, image_size: int) -> torch.Tensor | None:
    """The stored uint8 ``(count, 3, S, S)`` tensor, or None when absent, unreadable or of another shape."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        images = load_file(str(path))["images"]
    except (OSError, SafetensorError, KeyError, ValueError):
        return None
    if images.dtype != torch.uint8 or tuple(images.shape) != (count, 3, image_size, image_size):
        return None
    return images


def save_decoded(path: Path, images: torch.Tensor) -> bool:
    """Store ``images`` (uint8 ``(N, 3, S, S)``) atomically; False when too large or the write fails
    (a cache is an optimisation: a read-only or full disk is not an error)."""
    from safetensors.torch import save_file

    from p2p_cli.io.atomic import atomic_write

    if images.numel() > MAX_BYTES:
        return False
    try:
        atomic_write(path, lambda tmp: save_file({"images": images.contiguous()}, str(tmp)))
    except OSError:
        return False
    return True
