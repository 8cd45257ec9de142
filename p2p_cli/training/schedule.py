"""The training schedule as a flat list of small frozen steps, and the schedule arithmetic.

Each architecture's recipe (:mod:`p2p_cli.training.recipes`) turns a config into its steps; the
trainer executes them in order and snapshots after each, so ``--resume`` continues at the first
step not finished. This module holds what the recipes share: the step record, the epochs after
which ProtoPNet pushes, the two learning-rate decays, and each parameter group's learning rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2p_cli.io.config import TrainConfig, parse_milestones


@dataclass(frozen=True)
class Step:
    """One unit of the schedule (the snapshot granularity).

    kind: what the trainer does — ``epoch`` (one pass over the augmented training set),
        ``push`` (prototype projection), ``last_layer`` (convex last-layer optimisation) or
        ``prune`` (the architecture's own pruning, e.g. ProtoTree's).
    stage: the name recorded in ``metrics.jsonl`` — ``warm``, ``joint``, ``push``,
        ``last_layer`` or ``prune_tree``; ``warm``/``joint``/``last_layer`` also select the
        trainable parameter groups.
    epoch: the training epoch this step belongs to (0-based).
    """

    kind: str
    stage: str
    epoch: int


def push_epochs(cfg: TrainConfig) -> list[int]:
    """Epochs after which ProtoPNet pushes (0-based): ``push_start`` and every ``push_every``
    epochs after it, and always the last epoch, so every saved model is a pushed one."""
    epochs = set()
    if cfg.push_start is not None:
        epochs.update(range(cfg.push_start, cfg.epochs, cfg.push_every))
    epochs.add(cfg.epochs - 1)
    return sorted(epochs)


def last_layer_data(cfg: TrainConfig) -> str:
    """What the last-layer stage trains on: ``cached`` (similarities of the un-augmented training
    images, computed once) or ``augmented`` (the augmented training loader, one forward pass per
    epoch, as ProtoPNet and the Proto2Proto code); ``auto`` is ``augmented`` under
    ``fidelity: reference`` and ``cached`` otherwise."""
    if cfg.last_layer_data != "auto":
        return cfg.last_layer_data
    return "augmented" if cfg.fidelity == "reference" else "cached"


def joint_lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """ProtoPNet's StepLR: × γ at ``lr_step_start`` and every ``lr_step_size`` epochs after it."""
    if cfg.lr_step_start is None or epoch < cfg.lr_step_start:
        return 1.0
    return cfg.lr_gamma ** (1 + (epoch - cfg.lr_step_start) // cfg.lr_step_size)


def milestone_lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """MultiStepLR: × ``lr_gamma`` at every milestone ≤ ``epoch``."""
    return cfg.lr_gamma ** sum(1 for m in parse_milestones(cfg.milestones) if m <= epoch)


def group_lr(cfg: TrainConfig, group: str) -> tuple[float, float]:
    """(learning rate, weight decay) of a parameter group (the names of ``parameter_groups()``,
    plus ``extra`` for an objective's own modules, e.g. a FitNets regressor)."""
    return {"backbone": (cfg.lr_backbone, cfg.weight_decay), "add_on": (cfg.lr_add_on, cfg.weight_decay),
            "prototypes": (cfg.lr_prototypes, 0.0), "extra": (cfg.lr_add_on, cfg.weight_decay),
            "last_layer": (cfg.lr_last_layer, 0.0), "leaves": (cfg.lr_leaves, 0.0)}[group]
