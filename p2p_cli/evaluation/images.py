"""The images of a split, decoded by background threads, batch by batch, in order."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from p2p_cli.data.images import load_image_array
from p2p_cli.data.index import Sample

__all__ = ["Batch", "image_batches"]

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

