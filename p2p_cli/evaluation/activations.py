"""The arrays of one evaluation pass and the streaming pass that computes them.

One forward pass of a model over a split yields, per image n and prototype j, the argmin grid
location ``ℓ_j(n) ∈ [0, H·W)`` and the minimum squared-L2 distance ``d_j(n)`` (plus the
logits): :class:`Activations`, from which every metric of Proto2Proto (Keswani et al., CVPR
2022: AAP Eq. 7, AJS Eq. 8, PMS Algorithm 1) is computed. For the part-based consistency and
stability of Huang et al. (ICCV 2023) the pass also keeps the arg-max pixel of each
prototype's similarity map on its own-class images, clean and under seeded noise
(:class:`PartArgmax`).

Peak memory does not depend on the number of images beyond the ``O(N·m)`` arrays: images
stream through in batches, and only ``(B, m, H, W)`` distances exist at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from p2p_cli.data.transforms import normalize
from p2p_cli.evaluation.images import Batch
from p2p_cli.metrics import argmax_pixel
from p2p_cli.models.protopnet import ProtoPNet, log_similarity
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.threads import one_thread

__all__ = [
    "NOISE_CLIP",
    "NOISE_STD",
    "Activations",
    "PartArgmax",
    "PassJob",
    "compute_activations",
    "concat_parts",
    "stability_noise",
]

NOISE_STD = 0.2
"""Stability noise (Huang et al., ICCV 2023): Gaussian, std 0.2 in normalised input space …"""
NOISE_CLIP = 0.25
"""… clipped to ±0.25."""


@dataclass
class Activations:
    """What one forward pass of a model over a split gives: the inputs of every metric.

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
class PassJob:
    """A model that needs (part of) a forward pass: which outputs to compute, then the arrays
    :func:`compute_activations` fills in (shapes as in :class:`Activations`; ``parts`` maps
    ``clean``/``noisy`` to per-batch ``[proto, image, xy]`` chunks for :func:`concat_parts`)."""

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


def stability_noise(indices: torch.Tensor, shape: tuple[int, ...], seed: int) -> torch.Tensor:
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


@torch.inference_mode()
def compute_activations(jobs: Sequence[PassJob], batches: Iterable[Batch], rt: Runtime, *, n_images: int,
                        image_size: int, noise_seed: int = 0, progress: Callable[[int], None] | None = None,
                        offset: int = 0) -> None:
    """One streaming pass over the batches feeding every job's model (fills the jobs in place).

    ``batches`` yield ``(images, labels, indices)`` covering indices ``offset..offset+n_images-1``
    (a shard of a split under torch.distributed: image ``i`` fills row ``i - offset``; the indices
    themselves seed the stability noise and name the images of the part arrays); uint8
    images are normalised here batch by batch (ImageNet mean/std, as
    :func:`~p2p_cli.data.transforms.eval_transform`), float images are taken as normalised.

    Per batch and model: one forward pass (backbone under ``rt.autocast()``, prototype layer in
    fp32), argmin of ``distances`` and the model's ``min_distances``; with ``clean``/``noisy`` also
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
        with one_thread(rt.device):  # the data side (decode, per-image ops, collate): small CPU ops
            batch = next(batches, None)
            if batch is None:
                break
            images, labels, indices = batch
            noise = stability_noise(indices, tuple(images.shape[1:]), noise_seed).to(rt.device) if want_noise else None
        x = images.to(rt.device, non_blocking=True)
        if x.dtype == torch.uint8:  # normalise per batch, not per image: a few large ops (all threads)
            x = normalize(x)
        noisy_x = (x + noise).contiguous(memory_format=layout) if noise is not None else None
        x = x.contiguous(memory_format=layout)
        idx = indices.numpy() - int(offset)  # rows of this pass's arrays
        for job in jobs:
            if job.base or job.clean:
                with rt.autocast():
                    out = job.model(x)
                am = out.distances.flatten(2).argmin(dim=2)
                mn = out.min_distances
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


def concat_parts(chunks: list[list[np.ndarray]]) -> PartArgmax:
    """One :class:`PartArgmax` from the per-batch ``[proto (P,), image (P,), xy (P, 2)]`` chunks,
    sorted by prototype, then image (independent of batching)."""
    if not chunks:
        empty = np.zeros(0, dtype=np.int32)
        return PartArgmax(empty, empty, np.zeros((0, 2), dtype=np.int32))
    proto, image, xy = (np.concatenate([c[i] for c in chunks]) for i in range(3))
    order = np.lexsort((image, proto))  # canonical order: by prototype, then image
    return PartArgmax(proto[order], image[order], xy[order])

