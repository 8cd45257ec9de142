"""CPU threads around small operations."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def one_thread(device: torch.device | str) -> Iterator[None]:
    """Run the block on one CPU thread when ``device`` is the CPU (torch's thread count is restored
    after it); elsewhere, or when torch already uses one thread, change nothing.

    For loops of many small CPU ops — a K×m last layer, decoding and collating images: every op
    would open an OpenMP parallel region, and on a busy machine each region waits for descheduled
    threads. Measured on a busy 2-core machine: the last layer 50× slower with two threads, one
    image's ``permute().contiguous()`` 15 ms instead of 0.02 ms; never faster.
    """
    threads = torch.get_num_threads()
    if torch.device(device).type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
