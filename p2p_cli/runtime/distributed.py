"""torch.distributed plumbing: the process group under torchrun, DistributedDataParallel, shards,
gathers and agreements between ranks.

Data parallelism in p2p follows one rule: a run under ``torchrun --nproc_per_node W`` computes the
same thing as one process, with the work split. A global batch of ``batch_size`` images is cut
into W contiguous slices (:func:`split_sizes`); every rank's loss is weighted by its slice's share
(:func:`loss_weight`) so that DistributedDataParallel's gradient *average* equals the gradient of
the one-process batch mean. Evaluation passes give each rank a contiguous block of the dataset
(:func:`shard_range`), so concatenating the ranks' rows (:func:`gather_rows`) restores dataset order.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

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


def launched_as_main() -> bool:
    """True unless this process is a non-zero rank of a torchrun job (read from ``RANK``, so it
    answers before the process group exists): decides who prints."""
    return int(os.environ.get("RANK", "0")) == 0


def all_reduce_sum(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Sum ``t`` over the ranks in place (returned); a no-op in one process."""
    if rt.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(rt: Runtime) -> None:
    if rt.distributed:
        dist.barrier()


def all_agree(flag: bool, rt: Runtime) -> bool:
    """True only if ``flag`` is True on every rank (e.g. a cache hit every rank can use)."""
    if not rt.distributed:
        return flag
    t = torch.tensor([0 if flag else 1], device=rt.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t.item()) == 0


def split_sizes(n: int, world: int) -> list[int]:
    """How ``n`` rows are cut into ``world`` contiguous parts: the first ``n % world`` get one more.

    >>> split_sizes(10, 4)
    [3, 3, 2, 2]
    """
    return [n // world + (1 if r < n % world else 0) for r in range(world)]


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous block ``[lo, hi)`` of ``n`` rows (sizes as :func:`split_sizes`)."""
    sizes = split_sizes(n, world)
    lo = sum(sizes[:rank])
    return lo, lo + sizes[rank]


def loss_weight(local: int, total: int, rt: Runtime) -> float:
    """Factor of a rank's batch-mean loss so that DDP's gradient average is the global batch mean.

    With rank r holding ``n_r`` of the ``N`` rows of a global batch, DDP averages the ranks'
    gradients: ``(1/W)·Σ_r ∇(w_r·L_r)``; with ``w_r = n_r·W/N`` this is ``Σ_r (n_r/N)·∇L_r``, the
    gradient of the mean over all N rows (and of any batch-independent term, as ``Σ_r n_r = N``).
    1 in one process and when the slices are equal."""
    return 1.0 if not rt.distributed or total == 0 else local * rt.world_size / total


def wrap_ddp(module: nn.Module, rt: Runtime, *, find_unused: bool = False) -> nn.Module:
    """``module`` under DistributedDataParallel (bucketed all-reduce of the gradients, overlapped
    with the backward pass) when distributed, else ``module`` itself.

    DDP registers the parameters that require gradients *now*: build the wrapper after freezing,
    and again when a stage freezes or unfreezes parameters (the trainer does). Construction
    broadcasts rank 0's parameters and buffers, so every replica starts identical. Every registered
    parameter must get a gradient in every step unless ``find_unused`` (which costs a search of
    the autograd graph after each forward pass)."""
    if not rt.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [rt.device.index] if rt.device.type == "cuda" and rt.device.index is not None else None
    return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused,
                                   gradient_as_bucket_view=True)


def gather_rows(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Concatenate every rank's rows of ``t`` in rank order (shards may differ in length): with the
    contiguous blocks of :func:`shard_range` this is dataset order. Every rank gets all rows."""
    if not rt.distributed:
        return t
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(rt.world_size)]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(rt.world_size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)])


class TrainedModules(nn.Module):
    """The modules one training step updates, as one DDP unit: the model (its forward pass runs
    here) and an objective's extra modules (used in the loss; their gradients are averaged too)."""

    def __init__(self, model: nn.Module, extra: nn.Module) -> None:
        super().__init__()
        self.model, self.extra = model, extra

    def forward(self, images: torch.Tensor) -> Any:
        """images (B, 3, S, S) → the model's output."""
        return self.model(images)
