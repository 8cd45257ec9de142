"""CPU threads: torch's thread count for a command, and one thread around small operations."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

_NOTE: list[str] = []  # what configure_threads last decided, for `-v`


def physical_cores() -> int:
    """Physical cores this process may run on (SMT siblings count once; at least 1)."""
    from p2p_cli.runtime.hardware import cpu_capabilities

    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    physical = int(cpu_capabilities().get("num_physical_cores") or logical)
    total = int(cpu_capabilities().get("num_logical_cores") or logical)
    per_core = max(1, total // max(1, physical))  # hardware threads per core (2 with SMT)
    return max(1, min(physical, logical // per_core))


def configure_threads() -> str:
    """Set torch's intra-op threads to the physical cores, shared among the processes of this node
    under torchrun (``LOCAL_WORLD_SIZE``); an explicit ``OMP_NUM_THREADS`` is left as it is.

    Convolutions gain nothing from SMT siblings (they compete for the same vector units) and lose
    when threads outnumber cores. Returns the one-line note that ``-v`` prints.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        note = f"torch threads: {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']})"
    else:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
        cores = physical_cores()
        n = max(1, cores // local)
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        shared = f", shared by {local} processes" if local > 1 else ""
        note = f"torch threads: {n} ({cores} physical cores{shared}; set OMP_NUM_THREADS to change)"
    _NOTE[:] = [note]
    return note


def threads_note() -> str:
    """The note of the last :func:`configure_threads` call ('' before any)."""
    return _NOTE[0] if _NOTE else ""


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
