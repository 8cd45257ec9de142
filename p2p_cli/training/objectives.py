"""Training objectives: what loss a stage optimises, given the model's one forward pass.

``ProtoPNetObjective`` is train-teacher's (SPEC §3); distillation objectives (SPEC §5) live in
``workflows/distill.py`` and plug into the same trainer.
"""

from __future__ import annotations

import torch
from torch import nn

from p2p_cli.io.config import TrainConfig
from p2p_cli.losses.protopnet import l1_off_class, protopnet_loss
from p2p_cli.models.protopnet import ProtoOutput


class ProtoPNetObjective:
    """The architecture's own loss in the warm and joint stages (:func:`task_terms`):
    ProtoPNet CE + λ_clst·Clst + λ_sep·Sep + λ_l1·L1; ProtoTree NLL."""

    name = "protopnet"

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def extra_modules(self) -> dict[str, nn.Module]:
        return {}

    def loss(self, model: nn.Module, out: ProtoOutput, images: torch.Tensor, labels: torch.Tensor,
             stage: str) -> dict[str, torch.Tensor]:
        return task_terms(model, out, labels, self.cfg)


def tree_terms(model: nn.Module, out: ProtoOutput, labels: torch.Tensor, cfg: TrainConfig
               ) -> dict[str, torch.Tensor]:
    """ProtoTree: NLL of the tree's prediction (its logits are log ŷ)."""
    nll = nn.functional.nll_loss(out.logits, labels)
    return {"nll": nll, "total": nll}


def task_terms(model: nn.Module, out: ProtoOutput, labels: torch.Tensor, cfg: TrainConfig
               ) -> dict[str, torch.Tensor]:
    """The loss that trains ``model`` for classification, by its architecture."""
    return TASK_LOSSES[model.arch](model, out, labels, cfg)


def ppnet_terms(model: nn.Module, out: ProtoOutput, labels: torch.Tensor, cfg: TrainConfig
                ) -> dict[str, torch.Tensor]:
    return protopnet_loss(out.logits, out.min_distances, labels, model.class_identity, model.last_layer.weight,
                          lambda_clst=cfg.lambda_clst, lambda_sep=cfg.lambda_sep, lambda_l1=cfg.lambda_l1)


def last_layer_terms(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig
                     ) -> dict[str, torch.Tensor]:
    """Last-layer stage: CE + λ_l1·L1 (convex in h)."""
    ce = nn.functional.cross_entropy(logits, labels)
    l1 = l1_off_class(model.last_layer.weight, model.class_identity)
    return {"ce": ce, "l1": l1, "total": ce + cfg.lambda_l1 * l1}


TASK_LOSSES = {"protopnet": ppnet_terms, "prototree": tree_terms}
