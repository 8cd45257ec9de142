"""The activation cache and activations files.

The arrays of an evaluation pass (:class:`~p2p_cli.evaluation.activations.Activations`,
``(N, m)`` argmin/min distance, ``(N,)`` labels, ``(N, K)`` logits) are cached in
``<workdir>/.cache/activations/`` keyed by the model's weights hash, the dataset identity
(kind, root, a fingerprint of the split's files), the split, the input size/crop and the
precision, so re-evaluating, or adding a model, recomputes nothing it already has. The same
safetensors format is written by ``--save-activations`` (README, "Activations files").
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import p2p_cli
from p2p_cli.data.decoded import files_fingerprint
from p2p_cli.data.index import DatasetIndex
from p2p_cli.errors import P2PError, P2PWarning, os_error_message
from p2p_cli.evaluation.activations import NOISE_CLIP, NOISE_STD, Activations, PartArgmax
from p2p_cli.io.atomic import atomic_write_json
from p2p_cli.io.checkpoint import decode_metadata, load_tensors, save_tensors
from p2p_cli.runtime.device import Runtime

if TYPE_CHECKING:
    from p2p_cli.models.runs import LoadedRun

__all__ = [
    "ACTIVATIONS_FORMAT",
    "CACHE_VERSION",
    "ActivationCache",
    "activation_key",
    "activations_from_tensors",
    "activations_metadata",
    "files_fingerprint",
    "key_id",
    "load_activations",
    "save_activations",
]

ACTIVATIONS_FORMAT = "p2p-activations"
CACHE_VERSION = 2
"""Bump when the cached arrays change meaning: it is part of every cache key (2: min distances
recomputed exactly at the arg-min cell, :func:`~p2p_cli.models.protopnet.min_distances_at_argmin`)."""


def activation_key(*, weights: str, index: DatasetIndex, split: str, fingerprint: str, image_size: int,
                   crop_bbox: bool, rt: Runtime) -> dict[str, Any]:
    """The identity of one model's activation arrays (everything that changes them)."""
    return {"version": CACHE_VERSION, "weights": weights, "dataset": index.name, "root": str(index.root),
            "split": split, "files": fingerprint, "image_size": int(image_size), "crop_bbox": bool(crop_bbox),
            "precision": str(rt.amp_dtype).replace("torch.", "") if rt.amp_dtype else "fp32",
            "device": rt.device.type}


def key_id(key: dict[str, Any]) -> str:
    """A short, stable id of a cache key (sha256 of its sorted JSON, 20 hex digits)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


class ActivationCache:
    """``<workdir>/.cache/activations/``: one safetensors file per (model, dataset, split, …)
    and kind (``base``, ``clean``, ``noisy-s<seed>``); PMS results as small JSON files.

    A file is trusted only if its stored key equals the requested one; unreadable files are
    ignored (and overwritten). ``enabled=False`` reads and writes nothing.
    """

    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled

    def path(self, key: dict[str, Any], kind: str, suffix: str = "safetensors") -> Path:
        return self.root / f"{key['weights']}-{key['split']}-{key_id(key)}-{kind}.{suffix}"

    def load(self, key: dict[str, Any], kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """``(tensors, decoded metadata)`` of a matching cache file, else None."""
        path = self.path(key, kind)
        if not self.enabled or not path.is_file():
            return None
        try:
            tensors, raw = load_tensors(path)
        except P2PError:
            return None
        meta = decode_metadata(raw)
        if meta.get("key") != key or meta.get("kind") != kind:
            return None
        return tensors, meta

    def save(self, key: dict[str, Any], kind: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        if self.enabled:
            self._best_effort(lambda: save_tensors(self.path(key, kind), tensors, {**meta, "key": key, "kind": kind}))

    def _best_effort(self, write: Callable[[], None]) -> None:
        """A cache is best effort: a write the file system refuses (read-only workdir, disk full,
        permissions) turns the cache's writes off with one warning; the command goes on."""
        try:
            write()
        except OSError as exc:
            self.enabled = False
            warnings.warn(P2PWarning(f"activation cache not written ({os_error_message(exc)}); "
                                     "results are computed, not cached"), stacklevel=3)

    def load_json(self, name: str) -> dict[str, Any] | None:
        path = self.root / name
        if not self.enabled or not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def save_json(self, name: str, obj: dict[str, Any]) -> None:
        if self.enabled:
            self._best_effort(lambda: atomic_write_json(self.root / name, obj))


def activations_metadata(act: Activations, *, name: str, weights: str, index: DatasetIndex, split: str,
                         class_names: list[str]) -> dict[str, Any]:
    """Metadata of an activations file (see README, "Activations file format")."""
    return {"format": ACTIVATIONS_FORMAT, "p2p_version": p2p_cli.__version__, "model": name,
            "weights_hash": weights, "dataset": index.name, "data_root": str(index.root), "split": split,
            "grid": list(act.grid), "image_size": act.image_size, "num_images": int(act.labels.shape[0]),
            "num_prototypes": int(act.argmin.shape[1]), "class_names": class_names}


def activations_from_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Activations:
    """:class:`Activations` from the tensors and decoded metadata of an activations file."""
    return Activations(tensors["argmin"].numpy(), tensors["min_dist"].numpy(), tensors["labels"].numpy(),
                       tensors["logits"].numpy(), tuple(meta["grid"]), int(meta["image_size"]))  # type: ignore[arg-type]


def save_activations(folder: Path, rows: Sequence[LoadedRun], acts: dict[str, Activations],
                     clean: dict[str, PartArgmax], noisy: dict[str, PartArgmax], index: DatasetIndex, split: str,
                     noise_seed: int) -> None:
    """``folder/<row name>.safetensors`` per model (format: README, "Activations files")."""
    for em in rows:
        act = acts[em.name]
        tensors = act.tensors()
        if em.name in clean:
            tensors.update(clean[em.name].tensors("clean"))
        if em.name in noisy:
            tensors.update(noisy[em.name].tensors("noisy"))
        meta = activations_metadata(act, name=em.name, weights=em.weights, index=index, split=split,
                                    class_names=index.classes)
        if em.name in noisy:
            meta["noise"] = {"std": NOISE_STD, "clip": NOISE_CLIP, "seed": noise_seed}
        save_tensors(folder / f"{em.name.replace('/', '_')}.safetensors", tensors, meta)


def load_activations(path: str | Path) -> tuple[Activations, dict[str, Any]]:
    """Read an activations file written by ``--save-activations`` (or the cache)."""
    tensors, raw = load_tensors(path)
    meta = decode_metadata(raw)
    if meta.get("format") != ACTIVATIONS_FORMAT:
        raise P2PError(f"{path}: not a p2p activations file")
    return activations_from_tensors(tensors, meta), meta


