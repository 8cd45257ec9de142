"""torch.distributed plumbing: join the process group under torchrun, reduce, gather, wait."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from p2p_cli.runtime.device import Runtime


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA): (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def all_reduce_sum(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    if rt.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(rt: Runtime) -> None:
    if rt.distributed:
        dist.barrier()


def gather_rows(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Concatenate every rank's rows of ``t`` (shards may differ in length by a few rows)."""
    if not rt.distributed:
        return t
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(rt.world_size)]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(rt.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)])
