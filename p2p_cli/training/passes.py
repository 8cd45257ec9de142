"""Evaluation passes the trainer and pruning share."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from p2p_cli.data.loaders import eval_loader
from p2p_cli.io.config import TrainConfig
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.distributed import gather_rows
from p2p_cli.runtime.reporter import Reporter


@torch.no_grad()
def min_distance_pass(model: nn.Module, ds: Dataset, cfg: TrainConfig, rt: Runtime, reporter: Reporter,
                      description: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One eval pass over ``ds``: (min distances (N, m) fp32, labels (N,)), in dataset order.

    The model is put in eval mode; batches of ``cfg.test_batch_size``. Under torch.distributed
    each rank computes its shard and every rank gets all rows."""
    model.eval()
    loader = eval_loader(ds, cfg.test_batch_size, cfg.workers, rt)
    dists, labels = [], []
    with reporter.task(description, len(loader)) as advance:
        for images, y, _ in loader:
            with rt.autocast():
                out = model(rt.images(images))
            dists.append(out.min_distances.float())
            labels.append(y.to(rt.device))
            advance()
    return gather_rows(torch.cat(dists), rt), gather_rows(torch.cat(labels), rt)
