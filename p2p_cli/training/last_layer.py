"""ProtoPNet's last-layer stage: convex optimisation of h on cached similarities.

With everything before the last layer frozen, the loss ``CE + λ_l1·L1`` (Chen et al. 2019,
§2.2, stage 3) is convex in h (K, m); the similarities of the un-augmented training images are
computed once and reused every epoch. The trainer runs it after each push; pruning runs it after
each round of merges.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from p2p_cli.io.config import TrainConfig
from p2p_cli.losses.protopnet import l1_off_class
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.distributed import all_reduce_sum, loss_weight, shard_range, wrap_ddp
from p2p_cli.runtime.threads import one_thread

TERMS = ("ce", "l1", "total")
"""The keys of :func:`last_layer_terms`, in order."""


def last_layer_terms(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig
                     ) -> dict[str, torch.Tensor]:
    """Last-layer stage: ``CE + λ_l1·L1`` on logits (B, K), labels (B,); L1 over h's off-class cells."""
    ce = nn.functional.cross_entropy(logits, labels)
    l1 = l1_off_class(model.last_layer.weight, model.class_identity)
    return {"ce": ce, "l1": l1, "total": ce + cfg.lambda_l1 * l1}


def fit_last_layer(model: nn.Module, opt: torch.optim.Optimizer, sims: torch.Tensor, labels: torch.Tensor,
                   cfg: TrainConfig, epochs: int, *, generator: torch.Generator,
                   test_accuracy: Callable[[], float] | None = None, rt: Runtime | None = None
                   ) -> list[dict[str, Any]]:
    """Convex last-layer optimisation (ProtoPNet's last-layer stage): ``CE + λ_l1·L1`` in h only.

    sims: (N, m) cached log similarities of the un-augmented training images; labels: (N,).
    Each epoch shuffles them (``generator``) into mini-batches of ``cfg.batch_size`` and takes one
    step of ``opt`` per batch. ``opt`` must be bound to ``model.last_layer``'s parameters: after
    the model is rebuilt (pruning), create a new optimizer. Under torch.distributed (``rt``)
    every rank holds all N rows and draws the same permutation, takes its contiguous slice of
    each mini-batch, and ``h`` is wrapped in DistributedDataParallel: with the slice weights of
    :func:`~p2p_cli.runtime.distributed.loss_weight` the averaged gradient is the one-process
    mini-batch gradient (equal up to float summation order).
    Returns one row per epoch: ``ll_epoch``, loss terms, ``train_acc`` (and ``test_acc``), ``seconds``.
    """
    with one_thread(sims.device):  # a K×m layer: OpenMP synchronisation costs more than the work
        return _fit_last_layer(model, opt, sims, labels, cfg, epochs, generator, test_accuracy, rt)


def _fit_last_layer(model: nn.Module, opt: torch.optim.Optimizer, sims: torch.Tensor, labels: torch.Tensor,
                    cfg: TrainConfig, epochs: int, generator: torch.Generator,
                    test_accuracy: Callable[[], float] | None, rt: Runtime | None) -> list[dict[str, Any]]:
    rows = []
    distributed = rt is not None and rt.distributed
    layer = wrap_ddp(model.last_layer, rt) if distributed else model.last_layer  # type: ignore[arg-type]
    for e in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(labels), generator=generator).to(sims.device)
        sums: dict[str, float] = defaultdict(float)
        correct = 0
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start:start + cfg.batch_size]
            idx = batch
            if distributed:  # this rank's slice of the mini-batch
                lo, hi = shard_range(len(batch), rt.rank, rt.world_size)  # type: ignore[union-attr]
                idx = batch[lo:hi]
            logits = layer(sims[idx])
            opt.zero_grad(set_to_none=True)
            if len(idx) == 0:  # a last mini-batch smaller than the world: this rank adds a zero gradient
                (logits.sum() * 0.0).backward()
                opt.step()
                continue
            terms = last_layer_terms(model, logits, labels[idx], cfg)
            (terms["total"] * loss_weight(len(idx), len(batch), rt) if distributed else terms["total"]).backward()
            opt.step()
            for k, v in terms.items():
                sums[k] += float(v.detach()) * len(idx)
            correct += int((logits.argmax(1) == labels[idx]).sum())
        keys = TERMS
        if distributed:  # the epoch's figures over all ranks' slices
            totals = torch.tensor([float(correct)] + [sums[k] for k in keys], dtype=torch.float64)
            totals = all_reduce_sum(totals.to(rt.device), rt).cpu()  # type: ignore[arg-type]
            correct, sums = int(totals[0].item()), {k: float(totals[1 + i]) for i, k in enumerate(keys)}
        n = max(len(labels), 1)
        row: dict[str, Any] = {"ll_epoch": e + 1}
        row.update({k: sums[k] / n for k in keys})
        row["train_acc"] = correct / n
        if test_accuracy is not None:
            row["test_acc"] = test_accuracy()
        row["seconds"] = round(time.perf_counter() - t0, 3)  # this epoch's own time
        rows.append(row)
    return rows
