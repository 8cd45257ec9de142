"""Per-architecture training recipes, in a registry keyed by the model class's ``arch``.

The trainer is generic: everything that differs between ProtoPNet and ProtoTree is a method of
the architecture's :class:`Recipe` — the step plan, which parameter groups each stage trains,
the learning-rate factor of an epoch, the optimizer class, the classification loss, a hook after
every batch, and the architecture's own pruning step. A new architecture registers its recipe
with :func:`register_recipe` (``recipe_for(model.arch)`` finds it), in the spirit of timm's
model registry.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from p2p_cli.errors import P2PError
from p2p_cli.io.config import TrainConfig
from p2p_cli.losses.protopnet import protopnet_loss
from p2p_cli.models.protopnet import ProtoOutput, ProtoPNet
from p2p_cli.models.prototree import ProtoTree
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.distributed import all_reduce_sum
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.training.schedule import Step, joint_lr_factor, milestone_lr_factor, push_epochs


class Recipe:
    """How one architecture trains. Subclasses set ``arch`` and override what differs."""

    arch: ClassVar[str]
    optimizer: ClassVar[type[torch.optim.Optimizer]] = torch.optim.Adam

    def plan(self, cfg: TrainConfig) -> list[Step]:
        """The schedule: every step in execution order."""
        raise NotImplementedError

    def head_groups(self, cfg: TrainConfig, *, head_frozen: bool) -> tuple[str, ...]:
        """Parameter groups of the decision head trained with add-on and prototypes in the warm
        and joint stages (ProtoPNet: none — its last layer has a stage of its own)."""
        return ()

    def joint_head_groups(self) -> tuple[str, ...]:
        """Groups of the decision head that the joint stage adds when an objective asks for it
        (ProtoPNet: its last layer; see :meth:`stage_groups`)."""
        return ()

    def stage_groups(self, stage: str, cfg: TrainConfig, *, head_frozen: bool = False,
                     joint_head: bool = False) -> tuple[str, ...]:
        """The parameter groups ``stage`` optimises, in optimizer order (all others are frozen).

        warm: add-on, prototypes, an objective's extra modules (and the backbone with
        ``warm_train_backbone``); joint: backbone too, and with ``joint_head`` (Proto2Proto
        distillation under ``fidelity: reference``, whose public code puts the last layer in its
        joint optimizer at ``lrLastLayer``) the :meth:`joint_head_groups`; last_layer: the last
        layer, unless the head is the teacher's, frozen.
        """
        head = self.head_groups(cfg, head_frozen=head_frozen)
        if stage == "warm":
            groups = ("add_on", "prototypes", "extra") + head
            return ("backbone",) + groups if cfg.warm_train_backbone else groups
        if stage == "joint":
            extra_head = tuple(g for g in self.joint_head_groups() if g not in head)
            return ("backbone", "add_on", "prototypes", "extra") + head + (
                extra_head if joint_head and not head_frozen else ())
        if stage == "last_layer":
            return () if head_frozen else ("last_layer",)
        raise ValueError(stage)

    def lr_factor(self, cfg: TrainConfig, stage: str, epoch: int) -> float:
        """Factor applied to every group's initial learning rate in ``epoch`` of ``stage``."""
        raise NotImplementedError

    def task_loss(self, model: nn.Module, out: ProtoOutput, labels: torch.Tensor, cfg: TrainConfig
                  ) -> dict[str, torch.Tensor]:
        """The loss that trains the model for classification: named terms and their weighted ``total``."""
        raise NotImplementedError

    def before_epoch(self, model: nn.Module, *, head_frozen: bool) -> None:
        """Called at the start of every training epoch, before its first batch."""

    def after_batch(self, model: nn.Module, out: ProtoOutput, labels: torch.Tensor, batches: int, rt: Runtime,
                    *, head_frozen: bool) -> None:
        """Called after every training batch (and its optimizer step); ``batches`` per epoch."""

    def prune(self, model: nn.Module, cfg: TrainConfig, reporter: Reporter) -> dict[str, Any]:
        """The architecture's own pruning step (in place); returns the sizes before and after."""
        raise NotImplementedError(f"{self.arch} has no pruning step")


_RECIPES: dict[str, Recipe] = {}


def register_recipe(cls: type[Recipe]) -> type[Recipe]:
    """Class decorator: register ``cls()`` under ``cls.arch``."""
    if cls.arch in _RECIPES:
        raise ValueError(f"a training recipe for '{cls.arch}' is already registered")
    _RECIPES[cls.arch] = cls()
    return cls


def recipe_for(arch: str) -> Recipe:
    """The registered recipe of architecture ``arch`` (a model class's ``arch``)."""
    if arch not in _RECIPES:
        raise P2PError(f"no training recipe for architecture {arch!r} (known: {', '.join(_RECIPES)})")
    return _RECIPES[arch]


@register_recipe
class ProtoPNetRecipe(Recipe):
    """ProtoPNet (Chen et al., NeurIPS 2019, §2.2): warm epochs (backbone frozen) → joint epochs,
    with a push and a last-layer optimisation at ``push_start``, every ``push_every`` epochs
    after it and after the last epoch. Adam; StepLR in the joint stage."""

    arch = ProtoPNet.arch
    optimizer = torch.optim.Adam

    def plan(self, cfg: TrainConfig) -> list[Step]:
        steps: list[Step] = []
        pushes = set(push_epochs(cfg))
        for epoch in range(cfg.epochs):
            steps.append(Step("epoch", "warm" if epoch < cfg.warm_epochs else "joint", epoch))
            if epoch in pushes:
                steps.append(Step("push", "push", epoch))
                steps.append(Step("last_layer", "last_layer", epoch))
        return steps

    def joint_head_groups(self) -> tuple[str, ...]:
        return ("last_layer",)

    def lr_factor(self, cfg: TrainConfig, stage: str, epoch: int) -> float:
        return joint_lr_factor(cfg, epoch) if stage == "joint" else 1.0

    def task_loss(self, model: nn.Module, out: ProtoOutput, labels: torch.Tensor, cfg: TrainConfig
                  ) -> dict[str, torch.Tensor]:
        """``CE + λ_clst·Clst + λ_sep·Sep + λ_l1·L1`` (Chen et al. 2019, §2.2) on logits (B, K)
        and min distances (B, m)."""
        return protopnet_loss(out.logits, out.min_distances, labels, model.class_identity, model.last_layer.weight,
                              lambda_clst=cfg.lambda_clst, lambda_sep=cfg.lambda_sep, lambda_l1=cfg.lambda_l1)


@register_recipe
class ProtoTreeRecipe(Recipe):
    """ProtoTree (Nauta et al., CVPR 2021, §3): epochs with the backbone frozen for the first
    ``warm_epochs``, then prune the tree and project its prototypes once, at the end. AdamW;
    MultiStepLR at ``milestones`` in every stage; leaves trained by gradient or derivative-free."""

    arch = ProtoTree.arch
    optimizer = torch.optim.AdamW

    def plan(self, cfg: TrainConfig) -> list[Step]:
        steps = [Step("epoch", "warm" if e < cfg.warm_epochs else "joint", e) for e in range(cfg.epochs)]
        last = cfg.epochs - 1
        return steps + [Step("prune", "prune_tree", last), Step("push", "push", last)]

    def head_groups(self, cfg: TrainConfig, *, head_frozen: bool) -> tuple[str, ...]:
        """The leaves train with the rest only when they are gradient-trained and not the
        teacher's, reused frozen."""
        return ("leaves",) if cfg.leaf_update == "gradient" and not head_frozen else ()

    def lr_factor(self, cfg: TrainConfig, stage: str, epoch: int) -> float:
        return milestone_lr_factor(cfg, epoch)

    def task_loss(self, model: nn.Module, out: ProtoOutput, labels: torch.Tensor, cfg: TrainConfig
                  ) -> dict[str, torch.Tensor]:
        """NLL of the tree's prediction ŷ (its logits (B, K) are log ŷ; Nauta et al. 2021, §3)."""
        nll = nn.functional.nll_loss(out.logits, labels)
        return {"nll": nll, "total": nll}

    def before_epoch(self, model: nn.Module, *, head_frozen: bool) -> None:
        """Derivative-free leaves: remember their parameters at the start of the epoch."""
        if model.derivative_free and not head_frozen:
            model.begin_leaf_epoch()

    def after_batch(self, model: nn.Module, out: ProtoOutput, labels: torch.Tensor, batches: int, rt: Runtime,
                    *, head_frozen: bool) -> None:
        """Nauta et al. 2021's derivative-free leaf update, after every optimizer step as in their code:
        ``c ← max(c − c_epoch-start / batches, 0) + u`` with u (L, K) the batch's summed
        responsibilities (:meth:`ProtoTree.update_leaves`), from the same forward pass as the
        loss; under torch.distributed u is summed over the ranks (one global batch). Nothing for
        gradient-trained leaves or a teacher's leaves reused frozen."""
        if not model.derivative_free or head_frozen:
            return
        stats = model.leaf_statistics(out.min_distances.detach().float(), labels)
        model.update_leaves(all_reduce_sum(stats, rt), batches)

    def prune(self, model: nn.Module, cfg: TrainConfig, reporter: Reporter) -> dict[str, Any]:
        """Drop the subtrees whose leaves all have max σ ≤ ``prune_threshold`` (Nauta et al. 2021)."""
        sizes = model.prune_(cfg.prune_threshold)
        reporter.info(f"pruned tree: {sizes['leaves_before']} → {sizes['leaves_after']} leaves, "
                      f"{sizes['prototypes_before']} → {sizes['prototypes_after']} prototypes")
        return sizes
