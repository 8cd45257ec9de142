"""The test images the robustness experiments run on: uint8 (3, S, S) images without
normalisation (the attacks work in [0, 1] pixel space), drawn in a seeded order."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Subset

from p2p_cli.attacks.pixels import forward_pixels, to_pixels
from p2p_cli.data.images import ImageDataset
from p2p_cli.data.index import DatasetIndex
from p2p_cli.errors import P2PError
from p2p_cli.io.config import SEED_MAX
from p2p_cli.models.protopnet import ProtoPNet
from p2p_cli.runtime.device import Runtime


def check_sizes(top_k: int, images: int | None, batch_size: int, seed: int = 0) -> None:
    """``--top-k``, ``--images`` (None: every test image) and ``--batch-size`` must be ≥ 1, ``--seed``
    within [0, 2^32 − 1]."""
    if not 0 <= seed <= SEED_MAX:
        raise P2PError(f"--seed must be in [0, {SEED_MAX}], got {seed}")
    if top_k < 1:
        raise P2PError(f"--top-k must be ≥ 1, got {top_k}")
    if images is not None and images < 1:
        raise P2PError(f"--images must be ≥ 1, got {images}")
    if batch_size < 1:
        raise P2PError(f"--batch-size must be ≥ 1, got {batch_size}")


def raw_test_set(index: DatasetIndex, image_size: int, crop_bbox: bool) -> ImageDataset:
    """The test split as uint8 (3, S, S) images (no normalisation: attacks work in pixel space)."""
    if not index.test:
        raise P2PError(f"the test split of {index.name} ({index.root}) has no images")
    return ImageDataset(index.test, None, image_size=image_size, crop_bbox=crop_bbox)


def image_loader(ds: ImageDataset, indices: Sequence[int], batch_size: int, workers: int) -> DataLoader:
    """Batches ``(images uint8 (B, 3, S, S), labels (B,), dataset indices (B,))`` of ``indices``, in order."""
    return DataLoader(Subset(ds, list(indices)), batch_size=batch_size, shuffle=False, num_workers=workers)


def image_order(n: int, seed: int) -> list[int]:
    """The seeded order in which test images are drawn (the same for every model)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


@torch.no_grad()
def clean_predictions(model: ProtoPNet, ds: ImageDataset, rt: Runtime, batch_size: int, workers: int,
                      advance: Callable[..., None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions, labels) on the whole test set, long (N,) each, in dataset order."""
    preds, labels = [], []
    for images, y, _ in image_loader(ds, range(len(ds)), batch_size, workers):
        preds.append(forward_pixels(model, to_pixels(images.to(rt.device)), rt).logits.argmax(1).cpu())
        labels.append(y)
        if advance:
            advance(len(y))
    return torch.cat(preds), torch.cat(labels)
