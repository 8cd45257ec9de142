"""Datasets and DataLoaders for training, push and evaluation, built from a config.

Every dataset yields ``(image, label, base_index)``: ``image`` uint8 ``(3, S, S)`` for training
(augmented and normalised per batch by :class:`~p2p_cli.data.transforms.BatchAugment` on the
training device) and float32 ImageNet-normalised ``(3, S, S)`` for push and test; ``S`` is
``cfg.image_size`` and ``base_index`` the position in the index split.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from p2p_cli.data.images import ImageDataset
from p2p_cli.data.index import DatasetIndex
from p2p_cli.data.readers import load_index
from p2p_cli.data.transforms import BatchAugment, eval_transform
from p2p_cli.errors import P2PError
from p2p_cli.io.config import TrainConfig
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.distributed import shard_range


def load_dataset_index(cfg: TrainConfig) -> DatasetIndex:
    """The index of ``cfg.dataset`` at ``cfg.data_root`` (the cached synthetic dataset without a root)."""
    return load_index(cfg.dataset, cfg.data_root, **synthetic_kwargs(cfg))


def synthetic_kwargs(cfg: TrainConfig) -> dict:
    """The synthetic-dataset parameters of ``cfg`` as ``load_index`` keywords (empty for other kinds)."""
    if cfg.dataset != "synthetic":
        return {}
    return dict(preset=cfg.synthetic_preset, num_classes=cfg.synthetic_classes,
                train_per_class=cfg.synthetic_train_per_class, test_per_class=cfg.synthetic_test_per_class,
                image_size=cfg.synthetic_image_size, seed=cfg.synthetic_seed)


@dataclass
class DataBundle:
    """The index and the three datasets of a run, plus the per-batch training augmentation."""

    index: DatasetIndex
    train: ImageDataset  # uint8 images, repeated; the trainer augments each batch with `augment`
    augment: BatchAugment
    push: ImageDataset  # un-augmented training images, in index order
    test: ImageDataset

    @property
    def classes(self) -> list[str]:
        return self.index.classes


def build_datasets(cfg: TrainConfig, index: DatasetIndex | None = None) -> DataBundle:
    """Train (uint8, augmented per batch by ``bundle.augment``), push and test datasets. With
    ``cache_images`` the decoded images are loaded once, in the main process, and the train and
    push datasets share one cache; the decoded tensors are also kept on disk for the next run on
    the same files (:mod:`p2p_cli.data.decoded`)."""
    index = index or load_dataset_index(cfg)
    common = dict(image_size=cfg.image_size, crop_bbox=cfg.crop_bbox, cache=cfg.cache_images)
    bundle = DataBundle(
        index=index,
        train=ImageDataset(index.train, None, repeats=cfg.repeats, **common),
        augment=BatchAugment(cfg.augment, jpeg=cfg.augment_jpeg),
        push=ImageDataset(index.train, eval_transform(cfg.image_size), **common),
        test=ImageDataset(index.test, eval_transform(cfg.image_size), **common),
    )
    if cfg.cache_images:
        bundle.train.preload(disk=True)
        bundle.test.preload(disk=True)
        bundle.push.share_cache(bundle.train)
    return bundle


def _worker_init(worker_id: int) -> None:  # keep each worker to one thread: 2-core machines
    torch.set_num_threads(1)


class GlobalBatchSampler(Sampler[list[int]]):
    """This rank's slice of every global batch of a seeded permutation of ``n`` rows.

    The permutation (``torch.randperm`` from ``seed``) and the global batches of ``batch_size``
    are those of one process whatever the world size; rank r takes the r-th contiguous slice of
    each (sizes of :func:`~p2p_cli.runtime.distributed.split_sizes`), so W processes together see
    exactly the one-process batches. A last partial batch is dropped when ``n > batch_size``.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if n and min(n, batch_size) < world:
            raise P2PError(f"batch_size {batch_size} over {n} training images cannot be split across {world} "
                           "processes: each needs at least one image per batch")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world

    def global_sizes(self) -> list[int]:
        """Size of each global batch, in order."""
        if self.n <= self.batch_size:
            return [self.n] if self.n else []
        return [self.batch_size] * (self.n // self.batch_size)

    def __len__(self) -> int:
        return len(self.global_sizes())

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        start = 0
        for size in self.global_sizes():
            lo, hi = shard_range(size, self.rank, self.world)
            yield order[start + lo:start + hi]
            start += size


def train_loader(ds: Dataset, cfg: TrainConfig, rt: Runtime, epoch_seed: int) -> DataLoader:
    """Shuffled loader whose order and augmentation depend only on ``epoch_seed`` (resumable);
    under torch.distributed each rank gets its slice of the same global batches
    (:class:`GlobalBatchSampler`): ``cfg.batch_size`` is the global batch."""
    sampler = GlobalBatchSampler(len(ds), cfg.batch_size, epoch_seed, rt.rank, rt.world_size)
    return DataLoader(ds, batch_sampler=sampler, num_workers=cfg.workers, worker_init_fn=_worker_init,
                      pin_memory=rt.device.type == "cuda")


def eval_loader(ds: Dataset, batch_size: int, workers: int, rt: Runtime | None = None) -> DataLoader:
    """Ordered loader; under torch.distributed each rank gets a contiguous block of the dataset
    (:func:`~p2p_cli.runtime.distributed.shard_range`), so the ranks' rows in rank order are the
    dataset's order."""
    if rt is not None and rt.distributed:
        lo, hi = shard_range(len(ds), rt.rank, rt.world_size)
        ds = Subset(ds, list(range(lo, hi)))
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                      worker_init_fn=_worker_init)
