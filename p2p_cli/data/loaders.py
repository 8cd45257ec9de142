"""Datasets and DataLoaders for training, push and evaluation, built from a config.

Every dataset yields ``(image, label, base_index)``: ``image`` uint8 ``(3, S, S)`` for training
(augmented and normalised per batch by :class:`~p2p_cli.data.transforms.BatchAugment` on the
training device) and float32 ImageNet-normalised ``(3, S, S)`` for push and test; ``S`` is
``cfg.image_size`` and ``base_index`` the position in the index split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from p2p_cli.data.images import ImageDataset
from p2p_cli.data.index import DatasetIndex
from p2p_cli.data.readers import load_index
from p2p_cli.data.transforms import BatchAugment, eval_transform
from p2p_cli.io.config import TrainConfig
from p2p_cli.runtime.device import Runtime


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


def train_loader(ds: Dataset, cfg: TrainConfig, rt: Runtime, epoch_seed: int) -> DataLoader:
    """Shuffled loader whose order and augmentation depend only on ``epoch_seed`` (resumable)."""
    gen = torch.Generator().manual_seed(epoch_seed)
    if rt.distributed:
        sampler = DistributedSampler(ds, num_replicas=rt.world_size, rank=rt.rank, shuffle=True,
                                     seed=epoch_seed, drop_last=True)
        return DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                          generator=gen, drop_last=True, persistent_workers=False,
                          worker_init_fn=_worker_init, pin_memory=rt.device.type == "cuda")
    return DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.workers, generator=gen,
                      drop_last=len(ds) > cfg.batch_size, worker_init_fn=_worker_init,
                      pin_memory=rt.device.type == "cuda")


def eval_loader(ds: Dataset, batch_size: int, workers: int, rt: Runtime | None = None) -> DataLoader:
    """Ordered loader; under torch.distributed each rank gets a strided shard (no padding)."""
    if rt is not None and rt.distributed:
        ds = Subset(ds, list(range(rt.rank, len(ds), rt.world_size)))
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                      worker_init_fn=_worker_init)
