"""Training objectives: what loss a stage optimises, given the model's one forward pass.

An objective has ``extra_modules()`` (trained and snapshotted with the model, e.g. a FitNets
regressor) and ``loss(model, out, images, labels, stage)`` → named terms with a ``total``.
:class:`TaskObjective` is train-teacher's; the distillation objectives live in
:mod:`p2p_cli.training.distillation` and plug into the same trainer.
"""

from __future__ import annotations

import torch
from torch import nn

from p2p_cli.io.config import TrainConfig
from p2p_cli.models.protopnet import ProtoOutput
from p2p_cli.training.recipes import recipe_for


def task_terms(model: nn.Module, out: ProtoOutput, labels: torch.Tensor, cfg: TrainConfig
               ) -> dict[str, torch.Tensor]:
    """The loss that trains ``model`` for classification, from its architecture's recipe:
    ProtoPNet ``CE + λ_clst·Clst + λ_sep·Sep + λ_l1·L1`` (Chen et al. 2019, §2.2); ProtoTree
    the NLL of its prediction (Nauta et al. 2021, §3). ``labels`` (B,)."""
    return recipe_for(model.arch).task_loss(model, out, labels, cfg)


class TaskObjective:
    """The architecture's own loss (:func:`task_terms`) in the warm and joint stages."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def extra_modules(self) -> dict[str, nn.Module]:
        return {}

    def loss(self, model: nn.Module, out: ProtoOutput, images: torch.Tensor, labels: torch.Tensor,
             stage: str) -> dict[str, torch.Tensor]:
        return task_terms(model, out, labels, self.cfg)
