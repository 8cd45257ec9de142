"""``evaluate``: accuracy and the interpretability-transfer metrics (SPEC §6) of several models.

One streaming forward pass per model over a dataset split yields, per image n and prototype
j, the argmin grid location ``ℓ_j(n) ∈ [0, H·W)`` and the minimum squared-L2 distance
``d_j(n)`` (plus the logits); every metric is then computed from those arrays:

* **acc** — top-1 accuracy, per-class accuracy, confusion matrix;
* **AAP(τ)** (paper Eq. 7), **AJS(τ)** (Eq. 8) and **PMS** (Algorithm 1, SPEC §6) —
  :mod:`p2p_cli.metrics.transfer`;
* beyond the paper: prototype **consistency** and **stability** from part annotations
  (Huang et al., ICCV 2023), **explanation** size and last-layer **sparsity**.

The arrays are cached in ``<workdir>/.cache/activations/`` keyed by the model's weights hash,
the dataset identity (kind, root, a fingerprint of the split's files), the split, the input
size/crop and the precision, so re-evaluating, or adding a model, recomputes nothing it already
has. Peak memory does not depend on the number of images beyond the ``O(N·m)`` arrays: images
stream through in batches, and only ``(B, m, H, W)`` distances exist at a time.

The result is a plain, JSON-ready dict (see :func:`evaluate_models`), so ``p2p quickstart``
and the CLI share this code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import p2p_cli
from p2p_cli.data.datasets import DatasetIndex, Sample, load_image_array, parts_in_input
from p2p_cli.data.loaders import load_dataset_index
from p2p_cli.data.transforms import normalize
from p2p_cli.errors import P2PError, did_you_mean
from p2p_cli.io.atomic import atomic_write_json
from p2p_cli.io.checkpoint import decode_metadata, load_tensors, save_tensors, weights_hash
from p2p_cli.io.config import TrainConfig, config_from_dict
from p2p_cli.io.rundir import RunDir, resolve_ref
from p2p_cli.metrics.classification import (
    accuracy,
    confusion_matrix,
    explanation_size,
    last_layer_sparsity,
    per_class_accuracy,
)
from p2p_cli.metrics.parts import (
    argmax_pixel,
    consistency_score,
    part_coverage,
    prototype_consistency,
    stability,
    stability_score,
)
from p2p_cli.metrics.transfer import aap, active_mask, ajs, pms
from p2p_cli.models.factory import load_model
from p2p_cli.models.protopnet import ProtoPNet, log_similarity
from p2p_cli.runtime.device import Runtime, make_runtime
from p2p_cli.runtime.reporter import Reporter

__all__ = [
    "ALL_METRICS",
    "DEFAULT_METRICS",
    "DEFAULT_TAUS",
    "Activations",
    "EvalOptions",
    "PartArgmax",
    "activation_key",
    "compute_activations",
    "evaluate_models",
    "image_batches",
    "load_activations",
    "metric_report",
    "parse_metrics",
    "parse_taus",
    "print_report",
    "tau_key",
]

DEFAULT_TAUS: tuple[float, ...] = (0.01, 0.1, 0.2, 0.45, 1.0, 3.0, 5.0, math.inf)
DEFAULT_METRICS: tuple[str, ...] = ("acc", "aap", "ajs", "pms")
EXTRA_METRICS: tuple[str, ...] = ("consistency", "stability", "explanation", "sparsity")
ALL_METRICS: tuple[str, ...] = DEFAULT_METRICS + EXTRA_METRICS

NOISE_STD = 0.2
"""Stability noise: Gaussian, std 0.2 in normalised input space (SPEC §6) …"""
NOISE_CLIP = 0.25
"""… clipped to ±0.25."""
ACTIVATIONS_FORMAT = "p2p-activations"
CACHE_VERSION = 1
"""Bump when the cached arrays change meaning: it is part of every cache key."""
ACTIVE_IMAGE_FRACTION = 0.9
"""Default headline τ: the smallest listed τ where the teacher has an active patch in ≥ 90 % of images."""


# --------------------------------------------------------------------------------------------
# option parsing (shared by the CLI and quickstart)
# --------------------------------------------------------------------------------------------


def tau_key(tau: float) -> str:
    """The JSON key of τ: ``"inf"`` for infinity, else the shortest round-tripping decimal
    without a trailing ``.0`` (``1.0 → "1"``, ``0.45 → "0.45"``)."""
    if math.isinf(tau):
        return "inf"
    text = repr(float(tau))
    return text[:-2] if text.endswith(".0") else text


def parse_taus(values: Sequence[str | float] | None) -> tuple[float, ...]:
    """τ thresholds from strings (``"inf"`` allowed; comma-separated lists too); order kept,
    duplicates dropped. Negative, NaN or ``-inf`` values are one-line errors."""
    if not values:
        return DEFAULT_TAUS
    out: list[float] = []
    for value in values:
        for part in (str(value).split(",") if isinstance(value, str) else [value]):
            text = str(part).strip()
            if not text:
                continue
            try:
                tau = math.inf if text.lower() in ("inf", "infinity", "+inf") else float(text)
            except ValueError:
                raise P2PError(f"--tau expects numbers or 'inf', got {text!r}") from None
            if math.isnan(tau) or tau < 0:
                raise P2PError(f"--tau values must be ≥ 0 (or inf), got {text!r}")
            if tau not in out:
                out.append(tau)
    if not out:
        raise P2PError("--tau needs at least one value")
    return tuple(out)


def parse_metrics(values: Sequence[str] | None) -> tuple[str, ...]:
    """Metric names (``all`` = every metric; comma-separated lists too), in canonical order."""
    if not values:
        return DEFAULT_METRICS
    chosen: set[str] = set()
    for value in values:
        for name in str(value).split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name == "all":
                chosen.update(ALL_METRICS)
            elif name in ALL_METRICS:
                chosen.add(name)
            else:
                raise P2PError(f"unknown metric '{name}'{did_you_mean(name, (*ALL_METRICS, 'all'))}; "
                               f"choose from {', '.join(ALL_METRICS)} or all")
    if not chosen:
        raise P2PError("--metrics needs at least one metric")
    return tuple(m for m in ALL_METRICS if m in chosen)


@dataclass
class EvalOptions:
    """Everything ``evaluate`` can be told besides the models.

    ``dataset``/``data_root``/``batch_size``/``workers``/``precision`` left as ``None`` come
    from the reference run's config.yaml (the teacher's, else the first model's).
    """

    metrics: tuple[str, ...] = DEFAULT_METRICS
    taus: tuple[float, ...] = DEFAULT_TAUS
    split: str = "test"
    fidelity: str = "paper"
    dataset: str | None = None
    data_root: str | None = None
    batch_size: int | None = None
    workers: int | None = None
    precision: str | None = None
    device: str = "auto"
    use_cache: bool = True
    noise_seed: int = 0
    headline_tau: float | None = None
    chance: bool = False
    chance_seed: int = 0
    save_activations: Path | None = None

    def check(self) -> None:
        if self.split not in ("test", "train"):
            raise P2PError(f"--split must be test or train, got '{self.split}'")
        if self.fidelity not in ("paper", "reference"):
            raise P2PError(f"--fidelity must be paper or reference, got '{self.fidelity}'")
        if self.batch_size is not None and self.batch_size < 1:
            raise P2PError(f"--batch-size must be ≥ 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise P2PError(f"--workers must be ≥ 0, got {self.workers}")
        if self.precision is not None and self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise P2PError(f"--precision must be auto, bf16, fp16 or fp32, got '{self.precision}'")
        if self.headline_tau is not None and (math.isnan(self.headline_tau) or self.headline_tau < 0):
            raise P2PError(f"--headline-tau must be ≥ 0 (or inf), got {self.headline_tau}")
        self.metrics = parse_metrics(self.metrics)
        self.taus = parse_taus(list(self.taus))
        if self.headline_tau is not None and self.headline_tau not in self.taus:
            raise P2PError(f"--headline-tau {tau_key(self.headline_tau)} is not among --tau "
                           f"{' '.join(tau_key(t) for t in self.taus)}")


# --------------------------------------------------------------------------------------------
# arrays of one evaluation pass
# --------------------------------------------------------------------------------------------


@dataclass
class Activations:
    """What one forward pass of a model over a split gives (SPEC §6).

    Attributes:
        argmin: ``(N, m)`` int32, flat argmin location ``ℓ = h·W + w`` of each prototype.
        min_dist: ``(N, m)`` float32, the matching minimum squared-L2 distance.
        labels: ``(N,)`` int64 true classes.
        logits: ``(N, K)`` float32.
        grid: ``(H, W)`` of the prototype-distance maps.
        image_size: input side S in pixels.
    """

    argmin: np.ndarray
    min_dist: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    grid: tuple[int, int]
    image_size: int

    @property
    def num_locations(self) -> int:
        return int(self.grid[0] * self.grid[1])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"argmin": torch.from_numpy(self.argmin), "min_dist": torch.from_numpy(self.min_dist),
                "labels": torch.from_numpy(self.labels), "logits": torch.from_numpy(self.logits)}


@dataclass
class PartArgmax:
    """Arg-max pixels of prototype similarity maps on own-class images (consistency/stability).

    One row per (prototype j, image n) pair with n of a class of j: ``proto`` ``(P,)`` int32,
    ``image`` ``(P,)`` int32 and ``xy`` ``(P, 2)`` int32 pixel ``(x, y)`` of the bicubically
    upsampled log-similarity map (:func:`~p2p_cli.metrics.parts.argmax_pixel`).
    """

    proto: np.ndarray
    image: np.ndarray
    xy: np.ndarray

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}_proto": torch.from_numpy(self.proto), f"{prefix}_image": torch.from_numpy(self.image),
                f"{prefix}_xy": torch.from_numpy(self.xy)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str) -> PartArgmax:
        return cls(tensors[f"{prefix}_proto"].numpy(), tensors[f"{prefix}_image"].numpy(),
                   tensors[f"{prefix}_xy"].numpy())


@dataclass
class _Job:
    """A model that needs (part of) a forward pass: which outputs to compute."""

    model: ProtoPNet
    n_images: int
    base: bool
    clean: bool
    noisy: bool
    argmin: np.ndarray | None = None
    min_dist: np.ndarray | None = None
    logits: np.ndarray | None = None
    labels: np.ndarray | None = None
    grid: tuple[int, int] = (0, 0)
    parts: dict[str, list[np.ndarray]] = field(default_factory=dict)


def _noise(indices: torch.Tensor, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Per-image Gaussian noise (std :data:`NOISE_STD`, clipped to ±:data:`NOISE_CLIP`), seeded by
    ``(seed, image index)`` so it does not depend on batching: ``(B, 3, S, S)`` float32."""
    out = torch.empty((len(indices), *shape), dtype=torch.float32)
    for row, idx in enumerate(indices.tolist()):
        gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(idx)) % (2**63))
        torch.randn(shape, generator=gen, out=out[row])
    return out.mul_(NOISE_STD).clamp_(-NOISE_CLIP, NOISE_CLIP)


def _own_class_argmax(model: ProtoPNet, distances: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor,
                      image_size: int) -> list[np.ndarray]:
    """Arg-max pixels of every prototype on every image of (one of) its classes in a batch.

    distances: ``(B, m, H, W)``; labels, indices: ``(B,)``. Returns ``[proto (P,), image (P,),
    xy (P, 2)]`` for the P (image, own-class prototype) pairs of the batch.
    """
    own = model.class_identity.to(distances.device)[:, labels.to(distances.device)].t() > 0  # (B, m)
    b_idx, j_idx = torch.nonzero(own, as_tuple=True)
    if b_idx.numel() == 0:
        empty = np.zeros(0, dtype=np.int32)
        return [empty, empty, np.zeros((0, 2), dtype=np.int32)]
    maps = log_similarity(distances[b_idx, j_idx].float())  # (P, H, W)
    xy = argmax_pixel(maps.cpu().numpy(), image_size).astype(np.int32)
    return [j_idx.cpu().numpy().astype(np.int32), indices[b_idx.cpu()].numpy().astype(np.int32), xy]


@contextlib.contextmanager
def _one_thread(rt: Runtime) -> Iterator[None]:
    """Run the data side of the loop (decode, per-image tensor ops, collate) single-threaded on
    the CPU: each of those small ops would otherwise open an OpenMP parallel region, and on a
    busy machine every region waits for descheduled threads (measured: 15 ms instead of 0.02 ms
    for one image's ``permute().contiguous()``)."""
    if rt.device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""``(images (B, 3, S, S), labels (B,) int64, indices (B,) int64)``; uint8 or normalised float images."""


def image_batches(samples: Sequence[Sample], image_size: int, crop_bbox: bool, batch_size: int, *,
                  threads: int = 1, prefetch: int = 2) -> Iterator[Batch]:
    """The split's images in order, batch by batch, decoded by background threads.

    Each batch is decoded (PIL: EXIF orientation, optional bbox crop, bilinear resize to S) into
    one numpy ``(B, S, S, 3)`` array by a worker thread while the caller runs forward passes on
    the previous one; PIL releases the GIL and no torch op runs in the threads. Yields uint8
    ``(B, 3, S, S)`` views of those arrays (channels_last memory layout, no copy), labels and
    dataset indices. Memory: ``prefetch + 1`` batches.
    """
    n = len(samples)
    labels = np.asarray([s.label for s in samples], dtype=np.int64)

    def decode(lo: int) -> np.ndarray:
        return np.stack([load_image_array(samples[i], image_size, crop_bbox)
                         for i in range(lo, min(n, lo + batch_size))])

    starts = iter(range(0, n, batch_size))
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="p2p-decode") as pool:
        pending: deque[tuple[int, Future[np.ndarray]]] = deque()
        for lo in itertools.islice(starts, max(1, prefetch)):
            pending.append((lo, pool.submit(decode, lo)))
        while pending:
            lo, future = pending.popleft()
            nxt = next(starts, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(decode, nxt)))
            arr = future.result()
            hi = lo + arr.shape[0]
            yield (torch.from_numpy(arr).permute(0, 3, 1, 2), torch.from_numpy(labels[lo:hi]),
                   torch.arange(lo, hi, dtype=torch.int64))


@torch.inference_mode()
def compute_activations(jobs: Sequence[_Job], batches: Iterable[Batch], rt: Runtime, *, n_images: int,
                        image_size: int, noise_seed: int = 0, progress: Callable[[int], None] | None = None) -> None:
    """One streaming pass over the batches feeding every job's model (fills the jobs in place).

    ``batches`` yield ``(images, labels, indices)`` covering indices ``0..n_images-1``; uint8
    images are normalised here batch by batch (ImageNet mean/std, as
    :func:`~p2p_cli.data.transforms.eval_transform`), float images are taken as normalised.

    Per batch and model: one forward pass (backbone under ``rt.autocast()``, prototype layer in
    fp32), ``distances.flatten(2).min(2)`` → argmin/min distance; with ``clean``/``noisy`` also
    the own-class arg-max pixels on the clean images and on the images plus seeded noise (a
    second forward pass). Memory: the preallocated ``O(N·m)`` arrays plus one batch.
    """
    n = int(n_images)
    for job in jobs:
        m, k = job.model.num_prototypes, job.model.config.num_classes
        job.argmin = np.zeros((n, m), dtype=np.int32)
        job.min_dist = np.zeros((n, m), dtype=np.float32)
        job.logits = np.zeros((n, k), dtype=np.float32)
        job.labels = np.zeros(n, dtype=np.int64)
        job.parts = {"clean": [], "noisy": []}
    size = int(image_size)
    want_noise = any(job.noisy for job in jobs)
    layout = torch.channels_last if rt.channels_last else torch.contiguous_format
    batches = iter(batches)
    while True:
        with _one_thread(rt):
            batch = next(batches, None)
            if batch is None:
                break
            images, labels, indices = batch
            noise = _noise(indices, tuple(images.shape[1:]), noise_seed).to(rt.device) if want_noise else None
        x = images.to(rt.device, non_blocking=True)
        if x.dtype == torch.uint8:  # normalise per batch, not per image: a few large ops (all threads)
            x = normalize(x)
        noisy_x = (x + noise).contiguous(memory_format=layout) if noise is not None else None
        x = x.contiguous(memory_format=layout)
        idx = indices.numpy()
        for job in jobs:
            if job.base or job.clean:
                with rt.autocast():
                    out = job.model(x)
                mn, am = out.distances.flatten(2).min(dim=2)
                job.grid = (int(out.distances.shape[2]), int(out.distances.shape[3]))
                job.argmin[idx] = am.cpu().numpy()  # type: ignore[index]
                job.min_dist[idx] = mn.float().cpu().numpy()  # type: ignore[index]
                job.logits[idx] = out.logits.float().cpu().numpy()  # type: ignore[index]
                job.labels[idx] = labels.numpy()  # type: ignore[index]
                if job.clean:
                    job.parts["clean"].append(_own_class_argmax(job.model, out.distances, labels, indices, size))
                del out
            if job.noisy:
                with rt.autocast():
                    out = job.model(noisy_x)
                job.parts["noisy"].append(_own_class_argmax(job.model, out.distances, labels, indices, size))
                del out
        if progress is not None:
            progress(len(idx))


def base_activations(models: Sequence[tuple[str, ProtoPNet, int, bool]], index: DatasetIndex, split: str,
                     workdir: Path,
                     rt: Runtime, *, batch_size: int, threads: int = 1, use_cache: bool = True,
                     reporter: Reporter | None = None) -> list[Activations]:
    """Each model's base arrays (argmin, min distance, logits, labels) on ``split``, in order.

    ``models`` are ``(name, model, image_size, crop_bbox)``. Arrays that ``p2p evaluate`` (or an
    earlier call) stored in ``<workdir>/.cache/activations/`` are read back; the others come
    from one streaming pass per input geometry and are stored for the next caller.
    """
    samples = index.split(split)  # type: ignore[arg-type]
    if not samples:
        raise P2PError(f"the {split} split of {index.name} ({index.root}) has no images")
    fingerprint = files_fingerprint(samples)
    cache = ActivationCache(Path(workdir) / ".cache" / "activations", enabled=use_cache)
    out: list[Activations | None] = []
    todo: dict[tuple[int, bool], list[tuple[int, _Job, dict[str, Any], str]]] = {}
    for i, (_, model, size, crop) in enumerate(models):
        weights = weights_hash(model.state_dict())
        key = activation_key(weights=weights, index=index, split=split, fingerprint=fingerprint,
                             image_size=size, crop_bbox=crop, rt=rt)
        hit = cache.load(key, "base")
        out.append(_activations_from(*hit) if hit is not None else None)
        if hit is None:
            model.to(rt.device).eval()
            if rt.channels_last:
                model.backbone.to(memory_format=torch.channels_last)
            todo.setdefault((size, crop), []).append((i, _Job(model, len(samples), True, False, False), key, weights))
    rep = reporter or Reporter(enabled=False)
    for (size, crop), members in todo.items():
        with rep.task(f"{split}-set activations ({size} px)", total=len(samples)) as advance:
            compute_activations([job for _, job, _, _ in members], image_batches(samples, size, crop, batch_size,
                                                                               threads=threads),
                                rt, n_images=len(samples), image_size=size, progress=advance)
        for i, job, key, weights in members:
            act = Activations(job.argmin, job.min_dist, job.labels, job.logits, job.grid, size)  # type: ignore[arg-type]
            cache.save(key, "base", act.tensors(), activations_metadata(
                act, name=models[i][0], weights=weights, index=index, split=split, class_names=index.classes))
            out[i] = act
    return [a for a in out if a is not None]


def _concat_parts(chunks: list[list[np.ndarray]]) -> PartArgmax:
    if not chunks:
        empty = np.zeros(0, dtype=np.int32)
        return PartArgmax(empty, empty, np.zeros((0, 2), dtype=np.int32))
    proto, image, xy = (np.concatenate([c[i] for c in chunks]) for i in range(3))
    order = np.lexsort((image, proto))  # canonical order: by prototype, then image
    return PartArgmax(proto[order], image[order], xy[order])


# --------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------


def files_fingerprint(samples: Sequence[Sample]) -> str:
    """Hash of the split's file list: path, label, box, size and mtime of every image."""
    h = hashlib.sha256()
    for s in samples:
        try:
            st = os.stat(s.path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{s.path}\t{s.label}\t{s.bbox}\t{stamp}\n".encode())
    return h.hexdigest()[:16]


def activation_key(*, weights: str, index: DatasetIndex, split: str, fingerprint: str, image_size: int,
                   crop_bbox: bool, rt: Runtime) -> dict[str, Any]:
    """The identity of one model's activation arrays (everything that changes them)."""
    return {"version": CACHE_VERSION, "weights": weights, "dataset": index.name, "root": str(index.root),
            "split": split, "files": fingerprint, "image_size": int(image_size), "crop_bbox": bool(crop_bbox),
            "precision": str(rt.amp_dtype).replace("torch.", "") if rt.amp_dtype else "fp32",
            "device": rt.device.type}


def _key_id(key: dict[str, Any]) -> str:
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
        return self.root / f"{key['weights']}-{key['split']}-{_key_id(key)}-{kind}.{suffix}"

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
            save_tensors(self.path(key, kind), tensors, {**meta, "key": key, "kind": kind})

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
            atomic_write_json(self.root / name, obj)


def activations_metadata(act: Activations, *, name: str, weights: str, index: DatasetIndex, split: str,
                         class_names: list[str]) -> dict[str, Any]:
    """Metadata of an activations file (see README, "Activations file format")."""
    return {"format": ACTIVATIONS_FORMAT, "p2p_version": p2p_cli.__version__, "model": name,
            "weights_hash": weights, "dataset": index.name, "data_root": str(index.root), "split": split,
            "grid": list(act.grid), "image_size": act.image_size, "num_images": int(act.labels.shape[0]),
            "num_prototypes": int(act.argmin.shape[1]), "class_names": class_names}


def _activations_from(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Activations:
    return Activations(tensors["argmin"].numpy(), tensors["min_dist"].numpy(), tensors["labels"].numpy(),
                       tensors["logits"].numpy(), tuple(meta["grid"]), int(meta["image_size"]))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


@dataclass
class EvalModel:
    """One row of the evaluation: a loaded model and what its run says about it."""

    name: str
    run: RunDir
    model: ProtoPNet
    meta: dict[str, Any]
    config: TrainConfig | None
    config_raw: dict[str, Any]
    weights: str
    role: str = "model"

    @property
    def method(self) -> str | None:
        if self.config_raw.get("command") == "distill" or "teacher" in self.meta:
            return str(self.meta.get("method") or self.config_raw.get("method") or "proto2proto")
        return None

    @property
    def recorded_teacher(self) -> dict[str, Any] | None:
        rec = self.config_raw.get("teacher_run") or self.meta.get("teacher")
        return rec if isinstance(rec, dict) else None

    @property
    def image_size(self) -> int:
        return self.config.image_size if self.config else 224

    @property
    def crop_bbox(self) -> bool:
        return bool(self.config.crop_bbox) if self.config else False


def load_eval_model(run: RunDir) -> EvalModel:
    """Load a run's final model, its metadata and (if present) its config.yaml."""
    model, meta = load_model(run.model_path)
    raw: dict[str, Any] = {}
    cfg = None
    if run.config_path.is_file():
        raw = run.read_config()
        cfg = config_from_dict(raw, source=str(run.config_path))
    return EvalModel(run.name, run, model, meta, cfg, raw, weights_hash(model.state_dict()))


def _same_run(a: RunDir, b: RunDir) -> bool:
    try:
        return a.path.resolve() == b.path.resolve()
    except OSError:
        return a.path == b.path


def _resolve_recorded_teacher(rec: dict[str, Any], workdir: Path) -> RunDir:
    path = rec.get("path")
    if path and Path(path).is_dir() and (Path(path) / "model.safetensors").is_file():
        return RunDir(Path(path))
    name = rec.get("name")
    if name:
        return resolve_ref(str(name), workdir)
    raise P2PError("a student records its teacher without a usable path or name; pass --teacher REF")


def select_models(model_refs: Sequence[str], teacher_ref: str | None, baseline_ref: str | None, workdir: Path,
                  notes: list[str]) -> tuple[list[EvalModel], EvalModel, EvalModel | None]:
    """Resolve the rows: the teacher first, then the given models in order (duplicates dropped).

    Without ``teacher_ref`` the teacher recorded in the students' runs is used (all must agree);
    if none records one, the first model is the reference. The baseline is ``baseline_ref``, or
    the first non-teacher model distilled with ``--method none``, or else the first non-teacher
    model trained by ``train-teacher``.
    """
    if not model_refs and not teacher_ref:
        raise P2PError("evaluate needs at least one model: --model REF (a run directory or a run name)")
    runs: list[RunDir] = []
    for ref in model_refs:
        run = resolve_ref(ref, workdir)
        if not any(_same_run(run, r) for r in runs):
            runs.append(run)
    loaded = [load_eval_model(r) for r in runs]
    if teacher_ref:
        t_run = resolve_ref(teacher_ref, workdir)
    else:
        recorded: dict[str, dict[str, Any]] = {}
        for em in loaded:
            rec = em.recorded_teacher
            if rec is not None:
                recorded[str(rec.get("path") or rec.get("name"))] = rec
        if len(recorded) > 1:
            names = sorted(str(r.get("name")) for r in recorded.values())
            raise P2PError(f"the models were distilled from different teachers ({', '.join(names)}); "
                           "pass --teacher REF")
        if recorded:
            t_run = _resolve_recorded_teacher(next(iter(recorded.values())), workdir)
        else:
            t_run = loaded[0].run
            if len(loaded) > 1:
                notes.append(f"no teacher recorded in the runs and no --teacher: '{t_run.name}' is the reference")
    teacher = next((em for em in loaded if _same_run(em.run, t_run)), None)
    if teacher is None:
        teacher = load_eval_model(t_run)
    others = [em for em in loaded if em is not teacher]
    teacher.role = "teacher"
    for em in others:
        if em.weights == teacher.weights:
            notes.append(f"'{em.name}' has exactly the teacher's weights (hash {em.weights})")
        rec = em.recorded_teacher
        if rec and rec.get("weights_hash") and rec["weights_hash"] != teacher.weights:
            notes.append(f"'{em.name}' was distilled from a teacher with weights hash {rec['weights_hash']}, but "
                         f"'{teacher.name}' now has {teacher.weights} (retrained or overwritten?)")
    baseline = None
    if baseline_ref:
        b_run = resolve_ref(baseline_ref, workdir)
        baseline = next((em for em in others if _same_run(em.run, b_run)), None)
        if baseline is None:
            if _same_run(b_run, teacher.run):
                raise P2PError(f"--baseline '{baseline_ref}' is the teacher; choose a student")
            baseline = load_eval_model(b_run)
            others.append(baseline)
    else:
        baseline = next((em for em in others if em.method == "none"), None)
        if baseline is None:
            baseline = next((em for em in others if em.config_raw.get("command") == "train-teacher"), None)
    if baseline is not None:
        baseline.role = "baseline"
    for em in others:
        if em.role == "model":
            em.role = "student"
    # unique row labels (two runs of the same name in different folders)
    seen: dict[str, int] = {}
    for em in [teacher, *others]:
        if em.name in seen:
            seen[em.name] += 1
            em.name = f"{em.name}#{seen[em.name]}"
        else:
            seen[em.name] = 1
    return [teacher, *others], teacher, baseline


# --------------------------------------------------------------------------------------------
# metrics from arrays
# --------------------------------------------------------------------------------------------


def _finite(x: float | None) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return float(x)


def _pms_entry(acts_t: Activations, acts_s: Activations, cache: ActivationCache | None, cache_name: str | None
               ) -> dict[str, Any]:
    if cache is not None and cache_name:
        hit = cache.load_json(cache_name)
        if hit is not None and {"score", "per_k", "m_values", "num_matched"} <= hit.keys():
            return hit
    res = pms(acts_t.argmin, acts_s.argmin, acts_t.num_locations)
    entry = {"score": res.score, "per_k": res.per_k, "m_values": res.m_values, "num_matched": res.num_matched,
             "num_teacher": res.num_teacher, "num_student": res.num_student,
             "seconds": sum(res.timings.values())}
    if cache is not None and cache_name:
        cache.save_json(cache_name, entry)
    return entry


def part_scores(model: ProtoPNet, parts: np.ndarray, image_size: int, clean: PartArgmax,
                noisy: PartArgmax | None) -> dict[str, float | None]:
    """Consistency and stability (Huang et al., ICCV 2023; SPEC §6) from arg-max pixels.

    parts: ``(N, P, 3)`` annotated points ``(x, y, visible)`` in input pixels. For prototype j,
    over the images of its class(es): coverage = visible parts inside the box of half-side
    ``36/224·S`` around the arg-max pixel; consistent iff some part is covered in ≥ 80 % of the
    images where it is visible; stability = fraction of images whose coverage row is unchanged
    under noise. Returns percentages (``consistency`` of prototypes, mean ``stability``).
    """
    m = model.num_prototypes
    starts = np.searchsorted(clean.proto, np.arange(m + 1))
    consistent: list[bool] = []
    stable: list[float] = []
    if noisy is not None and not (np.array_equal(noisy.proto, clean.proto)
                                  and np.array_equal(noisy.image, clean.image)):
        raise RuntimeError("clean and noisy arg-max pairs differ")  # same labels and identity: a bug
    for j in range(m):
        lo, hi = starts[j], starts[j + 1]
        imgs = clean.image[lo:hi]
        pts = parts[imgs]
        cov = part_coverage(clean.xy[lo:hi], pts, image_size)
        consistent.append(prototype_consistency(cov, pts[:, :, 2] > 0))
        if noisy is not None:
            stable.append(stability(cov, part_coverage(noisy.xy[lo:hi], pts, image_size)))
    out: dict[str, float | None] = {"consistency": consistency_score(consistent)}
    if noisy is not None:
        out["stability"] = stability_score(stable) if not all(math.isnan(s) for s in stable) else None
    return out


def metric_report(acts: dict[str, Activations], teacher: str, *, metrics: Sequence[str], taus: Sequence[float],
                  fidelity: str = "paper", models: dict[str, ProtoPNet] | None = None,
                  class_names: list[str] | None = None, cache: ActivationCache | None = None,
                  cache_ids: dict[str, str] | None = None, notes: list[str] | None = None) -> dict[str, Any]:
    """Every requested metric of every model from its arrays, in the JSON shape.

    Args:
        acts: row name → :class:`Activations` (same images, same order); ``teacher`` is one key.
        metrics: subset of :data:`ALL_METRICS` (``consistency``/``stability`` are added by the
            caller, who has the part annotations).
        taus: thresholds τ (``math.inf`` allowed).
        models: row name → model, needed for ``explanation`` and ``sparsity``.
        cache, cache_ids: optional PMS cache (row name → activation key id).

    Returns:
        ``{"taus": [...], "teacher": NAME, "models": {NAME: {"acc", "aap": {τ: v}, "ajs": {τ: v},
        "pms", ...}}}`` with τ keys from :func:`tau_key`. AJS/PMS of a model whose grid differs
        from the teacher's are ``None`` (explained in ``notes``).
    """
    notes = notes if notes is not None else []
    t_acts = acts[teacher]
    n_img = t_acts.labels.shape[0]
    out: dict[str, Any] = {"taus": [tau_key(t) for t in taus], "teacher": teacher, "models": {}}
    for name, a in acts.items():
        if a.labels.shape[0] != n_img or not np.array_equal(a.labels, t_acts.labels):
            raise P2PError(f"'{name}' and '{teacher}' were evaluated on different images")
        row: dict[str, Any] = {"num_prototypes": int(a.argmin.shape[1]), "grid": list(a.grid)}
        if "acc" in metrics:
            row["acc"] = accuracy(a.logits, a.labels)
            k = a.logits.shape[1]
            pca = per_class_accuracy(a.logits, a.labels, k)
            names = class_names if class_names and len(class_names) == k else [str(i) for i in range(k)]
            row["per_class_acc"] = {c: _finite(v) for c, v in zip(names, pca.tolist(), strict=True)}
            row["confusion"] = confusion_matrix(a.logits, a.labels, k).tolist()
        if "aap" in metrics:
            row["aap"] = {tau_key(t): aap(a.argmin, a.min_dist, t, a.num_locations) for t in taus}
        same_grid = tuple(a.grid) == tuple(t_acts.grid)
        if not same_grid and ("ajs" in metrics or "pms" in metrics):
            notes.append(f"'{name}' has a {a.grid[0]}×{a.grid[1]} grid but the teacher "
                         f"{t_acts.grid[0]}×{t_acts.grid[1]}: AJS and PMS are undefined (shown as –)")
        if "ajs" in metrics:
            row["ajs"] = {tau_key(t): (ajs(t_acts.argmin, t_acts.min_dist, a.argmin, a.min_dist, t,
                                            t_acts.num_locations, fidelity=fidelity) if same_grid else None)
                          for t in taus}
        if "pms" in metrics:
            if same_grid:
                ids = cache_ids or {}
                cname = f"pms-{ids[teacher]}-{ids[name]}.json" if teacher in ids and name in ids else None
                entry = _pms_entry(t_acts, a, cache, cname)
                row["pms"] = float(entry["score"])
                row["pms_per_k"] = [float(v) for v in entry["per_k"]]
                row["pms_caps"] = [int(v) for v in entry["m_values"]]
                row["pms_matched"] = int(entry["num_matched"])
                if a.argmin.shape[1] != t_acts.argmin.shape[1]:
                    notes.append(f"PMS of '{name}' matches min(mT, mS) = {entry['num_matched']} prototype pairs "
                                 f"(teacher {t_acts.argmin.shape[1]}, '{name}' {a.argmin.shape[1]} prototypes); "
                                 "the surplus prototypes of the larger model are ignored")
            else:
                row["pms"] = None
        model = (models or {}).get(name)
        if model is not None and hasattr(model, "predictions") and "acc" in metrics:
            row["tree"] = tree_modes(model, a)
        if model is not None and not hasattr(model, "last_layer"):
            if "explanation" in metrics or "sparsity" in metrics:
                notes.append(f"'{name}' is a {model.arch}: explanation size and last-layer sparsity are "
                             "ProtoPNet measures (shown as –)")
            model = None
        if "explanation" in metrics and model is not None:
            sims = np.log((a.min_dist.astype(np.float64) + 1.0) / (a.min_dist.astype(np.float64) + 1e-4))
            row["explanation_size"] = explanation_size(sims, model.last_layer.weight.detach().cpu().numpy(), a.logits)
        if "sparsity" in metrics and model is not None:
            row["sparsity"] = last_layer_sparsity(model.last_layer.weight.detach().cpu().numpy(),
                                                  model.class_identity.detach().cpu().numpy())
        out["models"][name] = row
    return out


def tree_modes(model: torch.nn.Module, a: Activations) -> dict[str, Any]:
    """A ProtoTree's three inference modes (distributed = soft, sample-max, greedy) from the
    min distances: accuracy, and fidelity = agreement with the soft tree's prediction."""
    with torch.no_grad():
        preds = model.predictions(torch.from_numpy(a.min_dist).float())
    labels = torch.from_numpy(a.labels).long()
    soft = preds["distributed"]
    n = max(len(labels), 1)
    return {"leaves": int(model.num_leaves), "depth": int(model.config.depth),
            "modes": {mode: {"acc": float((p == labels).sum()) / n, "fidelity": float((p == soft).sum()) / n}
                      for mode, p in preds.items()}}


def chance_level(t_acts: Activations, taus: Sequence[float], fidelity: str, seed: int) -> dict[str, Any]:
    """AJS and PMS of the teacher against itself on shuffled images (a seeded permutation):
    what two unrelated explainers with the teacher's statistics would score."""
    perm = np.random.default_rng(seed).permutation(t_acts.labels.shape[0])
    sh_arg, sh_dist = t_acts.argmin[perm], t_acts.min_dist[perm]
    return {
        "ajs": {tau_key(t): ajs(t_acts.argmin, t_acts.min_dist, sh_arg, sh_dist, t, t_acts.num_locations,
                                fidelity=fidelity) for t in taus},
        "pms": pms(t_acts.argmin, sh_arg, t_acts.num_locations).score,
        "seed": seed,
    }


def headline_tau(t_acts: Activations, taus: Sequence[float]) -> tuple[float, str]:
    """The τ for the summary table: the smallest listed τ at which the teacher has at least one
    active patch in ≥ 90 % of the images (below it, AJS is dominated by images where neither
    model has an active patch, which count 1 by definition)."""
    for t in sorted(taus):
        frac = float(active_mask(t_acts.argmin, t_acts.min_dist, t, t_acts.num_locations).any(axis=1).mean())
        if frac >= ACTIVE_IMAGE_FRACTION:
            return t, (f"headline τ = {tau_key(t)}: the smallest τ at which the teacher has an active patch in "
                       f"≥ {ACTIVE_IMAGE_FRACTION:.0%} of the images ({frac:.0%}); at smaller τ AJS mostly counts "
                       "images where neither model has one")
    t = max(taus)
    return t, f"headline τ = {tau_key(t)} (the largest listed)"


def _add_deltas(report: dict[str, Any], baseline: str | None) -> None:
    """``delta`` per non-teacher, non-baseline model: value minus the baseline's (SPEC §6)."""
    if baseline is None or baseline not in report["models"]:
        return
    base = report["models"][baseline]
    for name, row in report["models"].items():
        if name in (baseline, report["teacher"]):
            continue
        delta: dict[str, Any] = {}
        for key in ("acc", "pms", "consistency", "stability", "explanation_size", "sparsity"):
            if isinstance(row.get(key), float) and isinstance(base.get(key), float):
                delta[key] = row[key] - base[key]
        for key in ("aap", "ajs"):
            if isinstance(row.get(key), dict) and isinstance(base.get(key), dict):
                delta[key] = {t: (v - base[key][t] if v is not None and base[key].get(t) is not None else None)
                              for t, v in row[key].items()}
        row["delta"] = delta


# --------------------------------------------------------------------------------------------
# the whole evaluation
# --------------------------------------------------------------------------------------------


def _reference_config(rows: list[EvalModel], teacher: EvalModel, opts: EvalOptions) -> TrainConfig:
    cfg = teacher.config or next((em.config for em in rows if em.config is not None), None)
    if cfg is None:
        if not opts.dataset:
            raise P2PError("no run config.yaml records the dataset; pass --dataset (and --data-root)")
        cfg = TrainConfig()
    changes: dict[str, Any] = {}
    if opts.dataset:
        changes["dataset"] = opts.dataset
        if opts.dataset != cfg.dataset:
            changes["data_root"] = None
    if opts.data_root:
        changes["data_root"] = opts.data_root
    cfg = dataclasses.replace(cfg, **changes)
    kinds = ("synthetic", "cub", "cars", "folder")
    if cfg.dataset not in kinds:
        raise P2PError(f"unknown dataset '{cfg.dataset}'{did_you_mean(cfg.dataset, kinds)}; choose from "
                       f"{', '.join(kinds)}")
    if cfg.dataset != "synthetic" and not cfg.data_root:
        raise P2PError(f"dataset '{cfg.dataset}' needs a data root (--data-root)")
    return cfg


def evaluate_models(model_refs: Sequence[str], *, workdir: Path, teacher: str | None = None,
                    baseline: str | None = None, options: EvalOptions | None = None,
                    reporter: Reporter | None = None, rt: Runtime | None = None) -> dict[str, Any]:
    """Evaluate models against a teacher; returns the JSON-ready report.

    Shape: ``{"taus": [...], "teacher": NAME, "models": {NAME: {"acc": float, "aap": {TAU: float},
    "ajs": {TAU: float}, "pms": float, ...}}, ...}`` with τ keys as strings (``"inf"``), the
    teacher's row first; extra top-level keys: ``baseline``, ``split``, ``fidelity``,
    ``metrics``, ``dataset``, ``num_images``, ``headline_tau``, ``notes``, ``cache``,
    ``seconds`` and optionally ``chance``. Per model also ``role``, ``method``, ``backbone``,
    ``num_prototypes``, ``per_class_acc``, ``confusion``, ``pms_per_k``, ``pms_matched``,
    ``delta`` (vs the baseline), and the requested extras (``consistency``, ``stability`` in
    percent; ``explanation_size``; ``sparsity`` in [0, 1]).
    """
    t0 = time.perf_counter()
    opts = options or EvalOptions()
    opts.check()
    rep = reporter or Reporter(enabled=False)
    notes: list[str] = []
    rows, t_model, b_model = select_models(model_refs, teacher, baseline, workdir, notes)
    cfg = _reference_config(rows, t_model, opts)
    if rt is None:
        rt = make_runtime(opts.device, opts.precision or cfg.precision, cfg.channels_last)
    index = load_dataset_index(cfg)
    samples = index.split(opts.split)  # type: ignore[arg-type]
    if not samples:
        raise P2PError(f"the {opts.split} split of {index.name} ({index.root}) has no images")
    for em in rows:
        names = list(em.meta.get("class_names") or [])
        if names and names != index.classes:
            raise P2PError(f"'{em.name}' was trained on {len(names)} classes ({', '.join(names[:3])}, …) but "
                           f"{index.name} at {index.root} has {len(index.classes)} "
                           f"({', '.join(index.classes[:3])}, …); pass the model's dataset with --dataset/--data-root")
        if em.model.config.num_classes != index.num_classes:
            raise P2PError(f"'{em.name}' has {em.model.config.num_classes} classes but the dataset has "
                           f"{index.num_classes}")
    asked_parts = [m for m in ("consistency", "stability") if m in opts.metrics]
    want_parts = list(asked_parts)
    has_parts = bool(index.part_names) and any(s.parts for s in samples)
    if want_parts and not has_parts:
        notes.append(f"{index.name} has no part annotations: {' and '.join(want_parts)} not available")
        want_parts = []
    fingerprint = files_fingerprint(samples)
    cache = ActivationCache(Path(workdir) / ".cache" / "activations", enabled=opts.use_cache)
    noisy_kind = f"noisy-s{opts.noise_seed}"

    acts: dict[str, Activations] = {}
    clean: dict[str, PartArgmax] = {}
    noisy: dict[str, PartArgmax] = {}
    keys: dict[str, dict[str, Any]] = {}
    status: dict[str, str] = {}
    groups: dict[tuple[int, bool], list[tuple[EvalModel, _Job]]] = {}
    for em in rows:
        key = activation_key(weights=em.weights, index=index, split=opts.split, fingerprint=fingerprint,
                             image_size=em.image_size, crop_bbox=em.crop_bbox, rt=rt)
        keys[em.name] = key
        hit = cache.load(key, "base")
        if hit is not None:
            acts[em.name] = _activations_from(*hit)
        if want_parts:
            hit = cache.load(key, "clean")
            if hit is not None:
                clean[em.name] = PartArgmax.from_tensors(hit[0], "clean")
        if "stability" in want_parts:
            hit = cache.load(key, noisy_kind)
            if hit is not None:
                noisy[em.name] = PartArgmax.from_tensors(hit[0], "noisy")
        job = _Job(em.model, len(samples), base=em.name not in acts,
                   clean=bool(want_parts) and em.name not in clean,
                   noisy="stability" in want_parts and em.name not in noisy)
        status[em.name] = "cached" if not (job.base or job.clean or job.noisy) else "computed"
        if job.base or job.clean or job.noisy:
            job.base = job.base or job.clean  # a clean pass yields the base arrays anyway
            em.model.to(rt.device).eval()
            if rt.channels_last:
                em.model.backbone.to(memory_format=torch.channels_last)
            groups.setdefault((em.image_size, em.crop_bbox), []).append((em, job))

    batch_size = opts.batch_size or cfg.test_batch_size
    threads = max(1, cfg.workers if opts.workers is None else opts.workers)
    for (size, crop), members in groups.items():
        label = ", ".join(em.name for em, _ in members)
        passes = sum(1 + int(job.noisy) for _, job in members)
        with rep.task(f"evaluate {label} ({opts.split}, {size} px{', +noise' if passes > len(members) else ''})",
                      total=len(samples)) as advance:
            compute_activations([job for _, job in members],
                                image_batches(samples, size, crop, batch_size, threads=threads), rt,
                                n_images=len(samples), image_size=size, noise_seed=opts.noise_seed, progress=advance)
        for em, job in members:
            if job.base:  # (a noisy-only pass leaves the cached base arrays as they are)
                acts[em.name] = Activations(job.argmin, job.min_dist, job.labels, job.logits,  # type: ignore[arg-type]
                                            job.grid, size)
            meta = activations_metadata(acts[em.name], name=em.name, weights=em.weights, index=index,
                                        split=opts.split, class_names=index.classes)
            if job.base:
                cache.save(keys[em.name], "base", acts[em.name].tensors(), meta)
            if job.clean:
                clean[em.name] = _concat_parts(job.parts["clean"])
                cache.save(keys[em.name], "clean", clean[em.name].tensors("clean"), meta)
            if job.noisy:
                noisy[em.name] = _concat_parts(job.parts["noisy"])
                cache.save(keys[em.name], noisy_kind, noisy[em.name].tensors("noisy"),
                           {**meta, "noise": {"std": NOISE_STD, "clip": NOISE_CLIP, "seed": opts.noise_seed}})

    ids = {name: _key_id(k) for name, k in keys.items()}
    report = metric_report(acts, t_model.name, metrics=opts.metrics, taus=opts.taus, fidelity=opts.fidelity,
                           models={em.name: em.model for em in rows}, class_names=index.classes,
                           cache=cache, cache_ids=ids, notes=notes)
    if want_parts:
        part_cache: dict[tuple[int, bool], np.ndarray] = {}
        for em in rows:
            geo = (em.image_size, em.crop_bbox)
            if geo not in part_cache:
                part_cache[geo] = np.stack([parts_in_input(s, em.image_size, em.crop_bbox) for s in samples])
            scores = part_scores(em.model, part_cache[geo], em.image_size, clean[em.name],
                                 noisy.get(em.name) if "stability" in want_parts else None)
            for metric in want_parts:
                report["models"][em.name][metric] = scores.get(metric)
    for em in rows:
        row = report["models"][em.name]
        for metric in asked_parts:
            row.setdefault(metric, None)
        row.update({"role": em.role, "method": em.method, "backbone": em.model.config.backbone,
                    "path": str(em.run.path), "weights_hash": em.weights, "activations": status[em.name]})
        # put the paper's keys first, in the documented order
        report["models"][em.name] = {k: row[k] for k in ("acc", "aap", "ajs", "pms") if k in row} | \
            {k: v for k, v in row.items() if k not in ("acc", "aap", "ajs", "pms")}
    _add_deltas(report, b_model.name if b_model else None)
    h_tau = opts.headline_tau
    if h_tau is None:
        h_tau, why = headline_tau(acts[t_model.name], opts.taus)
    else:
        why = f"headline τ = {tau_key(h_tau)} (--headline-tau)"
    if opts.chance and ("ajs" in opts.metrics or "pms" in opts.metrics):
        report["chance"] = chance_level(acts[t_model.name], opts.taus, opts.fidelity, opts.chance_seed)
    t_acts = acts[t_model.name]
    report.update({
        "baseline": b_model.name if b_model else None,
        "split": opts.split,
        "fidelity": opts.fidelity,
        "metrics": list(opts.metrics),
        "dataset": {"name": index.name, "root": str(index.root), "num_classes": index.num_classes,
                    "class_names": index.classes},
        "num_images": int(t_acts.labels.shape[0]),
        "grid": list(t_acts.grid),
        "headline_tau": tau_key(h_tau),
        "headline_reason": why,
        "notes": list(dict.fromkeys(notes)),
        "cache": str(cache.root) if cache.enabled else None,
        "seconds": time.perf_counter() - t0,
    })
    if opts.save_activations is not None:
        save_activations(Path(opts.save_activations), rows, acts, clean, noisy, index, opts.split, opts.noise_seed)
        report["activations_dir"] = str(opts.save_activations)
    return report


def save_activations(folder: Path, rows: list[EvalModel], acts: dict[str, Activations],
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
    return _activations_from(tensors, meta), meta


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------


def _cell(value: Any, delta: Any = None, digits: int = 3, percent: bool = False) -> str:
    if value is None:
        return "–"
    text = f"{value:.1f}" if percent else f"{value:.{digits}f}"
    if isinstance(delta, float):
        text += f" ({delta:+.1f})" if percent else f" ({delta:+.{digits}f})"
    return text


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    """Print the paper's Table 2 shape (teacher, baseline, students with Δ vs the baseline), then
    AAP and AJS at every τ, the extras, and the notes."""
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
    metrics = report.get("metrics", list(DEFAULT_METRICS))
    h = report.get("headline_tau", report["taus"][-1])
    title = (f"{report['dataset']['name']} {report['split']} split: {report['num_images']} images, "
             f"{report['grid'][0]}×{report['grid'][1]} grid, fidelity {report['fidelity']}")
    table = Table(title=title, title_justify="left")
    cols = ["model", "role", "backbone", "m"]
    if "aap" in metrics:
        cols.append(f"AAP τ={h}")
    if "ajs" in metrics:
        cols.append(f"AJS τ={h} ↑")
    if "pms" in metrics:
        cols.append("PMS ↑")
    if "acc" in metrics:
        cols.append("acc ↑")
    extras = [("consistency", "consist. % ↑", True), ("stability", "stab. % ↑", True),
              ("explanation_size", "expl. size", False), ("sparsity", "sparsity ↑", False)]
    extras = [e for e in extras if any(e[0] in r for r in report["models"].values())]
    cols += [e[1] for e in extras]
    for i, c in enumerate(cols):
        table.add_column(c, justify="left" if i < 3 else "right", no_wrap=i < 3)
    for name, row in report["models"].items():
        d = row.get("delta", {})
        role = f"{row['method']} student" if row["role"] == "student" and row.get("method") else row["role"]
        cells = [name, role, row.get("backbone", ""), str(row.get("num_prototypes", ""))]
        if "aap" in metrics:
            cells.append(_cell(row["aap"][h], d.get("aap", {}).get(h), 2))
        if "ajs" in metrics:
            cells.append(_cell(row["ajs"][h], d.get("ajs", {}).get(h)))
        if "pms" in metrics:
            cells.append(_cell(row.get("pms"), d.get("pms")))
        if "acc" in metrics:
            cells.append(_cell(row.get("acc"), d.get("acc")))
        for key, _, pct in extras:
            cells.append(_cell(row.get(key), d.get(key), 2, percent=pct))
        table.add_row(*cells)
    if "chance" in report:
        ch = report["chance"]
        cells = ["chance", "shuffled teacher", "", ""]
        if "aap" in metrics:
            cells.append("")
        if "ajs" in metrics:
            cells.append(_cell(ch["ajs"][h]))
        if "pms" in metrics:
            cells.append(_cell(ch["pms"]))
        cells += [""] * (len(cols) - len(cells))
        table.add_row(*cells, style="dim")
    console.print(table)
    trees = {name: row["tree"] for name, row in report["models"].items() if row.get("tree")}
    if trees:
        t3 = Table(title="ProtoTree inference modes: accuracy (fidelity to the distributed tree)",
                   title_justify="left")
        for c in ("model", "leaves", "distributed", "sample-max", "greedy"):
            t3.add_column(c, justify="left" if c == "model" else "right")
        for name, tr in trees.items():
            modes = tr["modes"]
            t3.add_row(name, str(tr["leaves"]),
                       *(f"{modes[k]['acc']:.3f} ({modes[k]['fidelity']:.3f})"
                         for k in ("distributed", "sample_max", "greedy")))
        console.print(t3)
    if len(report["taus"]) > 1:
        for metric, label, digits in (("aap", "AAP(τ): distinct active patches per image", 2),
                                      ("ajs", "AJS(τ) with the teacher ↑", 3)):
            if metric not in metrics:
                continue
            t2 = Table(title=label, title_justify="left")
            t2.add_column("model")
            for t in report["taus"]:
                t2.add_column(f"τ={t}", justify="right")
            for name, row in report["models"].items():
                d = row.get("delta", {}).get(metric, {})
                t2.add_row(name, *(_cell(row[metric][t], d.get(t), digits) for t in report["taus"]))
            if metric == "ajs" and "chance" in report:
                t2.add_row("chance", *(_cell(report["chance"]["ajs"][t]) for t in report["taus"]), style="dim")
            console.print(t2)
    base = report.get("baseline")
    lines = [report.get("headline_reason", "")]
    if base:
        lines.append(f"(±x) = difference to the baseline '{base}'")
    lines += report.get("notes", [])
    for line in lines:
        if line:
            console.print(f"• {line}", style="dim", soft_wrap=True, markup=False)
