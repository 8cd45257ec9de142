"""The training schedule (SPEC §3) as a flat list of small frozen steps.

warm epochs → joint epochs, with a push (+ last-layer optimisation) at ``push_start``, every
``push_every`` epochs after it, and always after the final epoch, so every saved model is a
pushed one. The trainer executes the steps in order and snapshots after each, so ``--resume``
continues at the first step not finished.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2p_cli.io.config import TrainConfig, parse_milestones


@dataclass(frozen=True)
class Step:
    kind: str  # "epoch" | "push" | "last_layer" | "prune_tree"
    stage: str  # "warm" | "joint" | "push" | "last_layer" | "prune_tree"
    epoch: int  # the training epoch this step belongs to (0-based)


@dataclass(frozen=True)
class StageSpec:
    """Which parameter groups a stage optimises (all others are frozen)."""

    name: str
    groups: tuple[str, ...]


def stage_spec(stage: str, cfg: TrainConfig, *, head_frozen: bool = False) -> StageSpec:
    # a ProtoTree's leaves train with the rest only when they are gradient-trained and not reused frozen
    leaves = ("leaves",) if cfg.arch == "prototree" and cfg.leaf_update == "gradient" and not head_frozen else ()
    if stage == "warm":
        groups = ("add_on", "prototypes", "extra") + leaves
        if cfg.warm_train_backbone:
            groups = ("backbone",) + groups
        return StageSpec("warm", groups)
    if stage == "joint":
        return StageSpec("joint", ("backbone", "add_on", "prototypes", "extra") + leaves)
    if stage == "last_layer":
        return StageSpec("last_layer", () if head_frozen else ("last_layer",))
    raise ValueError(stage)


def push_epochs(cfg: TrainConfig) -> list[int]:
    """Epochs after which a push happens (0-based; the last epoch is always one)."""
    epochs = set()
    if cfg.push_start is not None:
        epochs.update(range(cfg.push_start, cfg.epochs, cfg.push_every))
    epochs.add(cfg.epochs - 1)
    return sorted(epochs)


def plan(cfg: TrainConfig) -> list[Step]:
    if cfg.arch == "prototree":
        return tree_plan(cfg)
    steps: list[Step] = []
    pushes = set(push_epochs(cfg))
    for epoch in range(cfg.epochs):
        steps.append(Step("epoch", "warm" if epoch < cfg.warm_epochs else "joint", epoch))
        if epoch in pushes:
            steps.append(Step("push", "push", epoch))
            steps.append(Step("last_layer", "last_layer", epoch))
    return steps


def tree_plan(cfg: TrainConfig) -> list[Step]:
    """ProtoTree (Nauta et al. 2021): epochs with the backbone frozen for the first
    ``warm_epochs``, then prune the tree and project its prototypes once, at the end."""
    steps = [Step("epoch", "warm" if e < cfg.warm_epochs else "joint", e) for e in range(cfg.epochs)]
    last = cfg.epochs - 1
    return steps + [Step("prune_tree", "prune_tree", last), Step("push", "push", last)]


def lr_factor(cfg: TrainConfig, stage: str, epoch: int) -> float:
    """Learning-rate factor of an epoch: ProtoPNet's StepLR in the joint stage; ProtoTree's
    MultiStepLR (× lr_gamma at every milestone ≤ epoch) in every stage."""
    if cfg.arch == "prototree":
        return cfg.lr_gamma ** sum(1 for m in parse_milestones(cfg.milestones) if m <= epoch)
    return joint_lr_factor(cfg, epoch) if stage == "joint" else 1.0


def joint_lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """StepLR: × γ at ``lr_step_start`` and every ``lr_step_size`` epochs after it."""
    if cfg.lr_step_start is None or epoch < cfg.lr_step_start:
        return 1.0
    return cfg.lr_gamma ** (1 + (epoch - cfg.lr_step_start) // cfg.lr_step_size)
