"""Every model's arrays on a split: from the activation cache, or from one streaming pass per input
geometry (stored back into the cache).

Shared by ``p2p evaluate`` (base arrays, and the clean/noisy arg-max pixels of the part metrics)
and the matched gallery of ``p2p visualize`` (base arrays): what one of them computed, the other
reads back. Under torch.distributed each rank computes a contiguous block of the split and every
rank then holds all arrays, in the order of one process; rank 0 writes the cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from p2p_cli.data.index import DatasetIndex, Sample
from p2p_cli.errors import P2PError
from p2p_cli.evaluation.activations import (
    NOISE_CLIP,
    NOISE_STD,
    Activations,
    PartArgmax,
    PassJob,
    compute_activations,
    concat_parts,
)
from p2p_cli.evaluation.cache import (
    ActivationCache,
    activation_key,
    activations_from_tensors,
    activations_metadata,
    files_fingerprint,
)
from p2p_cli.evaluation.images import Batch, image_batches
from p2p_cli.models.runs import LoadedRun
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.distributed import all_agree, barrier, gather_rows, shard_range
from p2p_cli.runtime.reporter import Reporter

__all__ = ["CollectedArrays", "base_activations", "collect_arrays", "split_samples"]


@dataclass
class CollectedArrays:
    """Every row's arrays, by row name: base (:class:`Activations`), clean and noisy arg-max pixels
    (:class:`PartArgmax`), cache keys, and whether they were ``cached`` or ``computed``."""

    acts: dict[str, Activations] = field(default_factory=dict)
    clean: dict[str, PartArgmax] = field(default_factory=dict)
    noisy: dict[str, PartArgmax] = field(default_factory=dict)
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)


def split_samples(index: DatasetIndex, split: str) -> list[Sample]:
    """The images of ``split`` (``train`` or ``test``); a one-line error when there are none."""
    samples = index.split(split)  # type: ignore[arg-type]
    if not samples:
        raise P2PError(f"the {split} split of {index.name} ({index.root}) has no images")
    return samples


def collect_arrays(rows: Sequence[LoadedRun], index: DatasetIndex, samples: list[Sample], split: str, rt: Runtime,
                   cache: ActivationCache, *, batch_size: int, threads: int = 1, parts: Sequence[str] = (),
                   noise_seed: int = 0, reporter: Reporter | None = None) -> CollectedArrays:
    """Each row's arrays on ``samples`` (the images of ``split``): base arrays always; with ``parts``
    (``consistency``, ``stability``) also the clean arg-max pixels, and for ``stability`` the
    noisy ones (seed ``noise_seed``). Cached arrays are read back; the rest come from one
    streaming pass per input geometry (:func:`~p2p_cli.evaluation.activations.compute_activations`)
    with every model of that geometry, and are stored into ``cache``. A row that needs a pass is
    moved to ``rt.device`` first."""
    fingerprint = files_fingerprint(samples)
    noisy_kind = f"noisy-s{noise_seed}"
    out = CollectedArrays()
    groups: dict[tuple[int, bool], list[tuple[LoadedRun, PassJob]]] = {}
    for em in rows:
        key = activation_key(weights=em.weights, index=index, split=split, fingerprint=fingerprint,
                             image_size=em.image_size, crop_bbox=em.crop_bbox, rt=rt)
        out.keys[em.name] = key
        hit = _load(cache, key, "base", rt)
        if hit is not None:
            out.acts[em.name] = activations_from_tensors(*hit)
        if parts:
            hit = _load(cache, key, "clean", rt)
            if hit is not None:
                out.clean[em.name] = PartArgmax.from_tensors(hit[0], "clean")
        if "stability" in parts:
            hit = _load(cache, key, noisy_kind, rt)
            if hit is not None:
                out.noisy[em.name] = PartArgmax.from_tensors(hit[0], "noisy")
        job = PassJob(em.model, len(samples), base=em.name not in out.acts,
                      clean=bool(parts) and em.name not in out.clean,
                      noisy="stability" in parts and em.name not in out.noisy)
        out.status[em.name] = "cached" if not (job.base or job.clean or job.noisy) else "computed"
        if job.base or job.clean or job.noisy:
            job.base = job.base or job.clean  # a clean pass yields the base arrays anyway
            em.to(rt.device, channels_last=rt.channels_last, frozen=False)
            groups.setdefault((em.image_size, em.crop_bbox), []).append((em, job))

    rep = reporter or Reporter(enabled=False)
    for (size, crop), members in groups.items():
        label = ", ".join(em.name for em, _ in members)
        passes = sum(1 + int(job.noisy) for _, job in members)
        lo, hi = shard_range(len(samples), rt.rank, rt.world_size)  # all of them in one process
        with rep.task(f"evaluate {label} ({split}, {size} px{', +noise' if passes > len(members) else ''})",
                      total=hi - lo) as advance:
            batches = _offset(image_batches(samples[lo:hi], size, crop, batch_size, threads=threads), lo)
            compute_activations([job for _, job in members], batches, rt, n_images=hi - lo, image_size=size,
                                noise_seed=noise_seed, progress=advance, offset=lo)
        if rt.distributed:
            for _, job in members:
                _gather_job(job, rt)
        for em, job in members:
            key = out.keys[em.name]
            if job.base:  # (a noisy-only pass leaves the cached base arrays as they are)
                out.acts[em.name] = Activations(job.argmin, job.min_dist, job.labels, job.logits,  # type: ignore[arg-type]
                                                job.grid, size)
            meta = activations_metadata(out.acts[em.name], name=em.name, weights=em.weights, index=index,
                                        split=split, class_names=index.classes)
            if job.base and rt.is_main:
                cache.save(key, "base", out.acts[em.name].tensors(), meta)
            if job.clean:
                out.clean[em.name] = concat_parts(job.parts["clean"])
                if rt.is_main:
                    cache.save(key, "clean", out.clean[em.name].tensors("clean"), meta)
            if job.noisy:
                out.noisy[em.name] = concat_parts(job.parts["noisy"])
                if rt.is_main:
                    cache.save(key, noisy_kind, out.noisy[em.name].tensors("noisy"),
                               {**meta, "noise": {"std": NOISE_STD, "clip": NOISE_CLIP, "seed": noise_seed}})
    if groups:
        barrier(rt)  # rank 0 has stored what it computed before any rank reads the cache again
    return out


def _load(cache: ActivationCache, key: dict[str, Any], kind: str, rt: Runtime) -> Any:
    """A cache entry, or None; under torch.distributed None unless every rank has it (the ranks
    must agree on which passes run, or their collectives would not match)."""
    hit = cache.load(key, kind)
    return hit if all_agree(hit is not None, rt) else None


def _offset(batches: Iterator[Batch], lo: int) -> Iterator[Batch]:
    """``batches`` of a shard starting at image ``lo`` of the split, with the split's indices."""
    for images, labels, indices in batches:
        yield images, labels, indices + lo


def _gather_job(job: PassJob, rt: Runtime) -> None:
    """Replace a job's shard arrays by the whole split's, on every rank: the (N, ·) arrays in
    dataset order (the shards are contiguous blocks in rank order) and the part rows of all
    ranks (put in canonical order by :func:`concat_parts`)."""
    def rows(a: np.ndarray) -> np.ndarray:
        return gather_rows(torch.from_numpy(np.ascontiguousarray(a)).to(rt.device), rt).cpu().numpy()

    if job.base:
        job.argmin, job.min_dist = rows(job.argmin), rows(job.min_dist)  # type: ignore[arg-type]
        job.logits, job.labels = rows(job.logits), rows(job.labels)  # type: ignore[arg-type]
        grid = gather_rows(torch.tensor([job.grid], device=rt.device), rt)  # a rank with no images has (0, 0)
        job.grid = (int(grid[:, 0].max()), int(grid[:, 1].max()))
    for kind, wanted in (("clean", job.clean), ("noisy", job.noisy)):
        if wanted:
            local = concat_parts(job.parts[kind])
            job.parts[kind] = [[rows(local.proto), rows(local.image), rows(local.xy)]]


def base_activations(rows: Sequence[LoadedRun], index: DatasetIndex, split: str, workdir: Path, rt: Runtime, *,
                     batch_size: int, threads: int = 1, use_cache: bool = True,
                     reporter: Reporter | None = None) -> list[Activations]:
    """Each row's base arrays (argmin, min distance, logits, labels) on ``split``, in order, through
    ``<workdir>/.cache/activations/`` (:func:`collect_arrays`): what ``p2p evaluate`` or an earlier
    call stored is read back."""
    cache = ActivationCache(Path(workdir) / ".cache" / "activations", enabled=use_cache)
    arrays = collect_arrays(rows, index, split_samples(index, split), split, rt, cache, batch_size=batch_size,
                            threads=threads, reporter=reporter)
    return [arrays.acts[em.name] for em in rows]
