"""The pruning loop: ProtoPShare merge steps or one k-NN round, each followed by fine-tuning.

**ProtoPShare** (Rymarczyk et al., KDD 2021; public code `proto_join.py`): each step computes the data-dependent
dissimilarity of the prototypes' activation vectors over the un-augmented training set, takes the
threshold κ = the ``step``-th smallest nearest-neighbour dissimilarity and, visiting the
prototypes in index order, merges every prototype within κ of the visited one into it
(:mod:`p2p_cli.pruning.protopshare`); a group keeps its survivor's vector, sums the members'
last-layer columns and serves the union of their classes (:meth:`ProtoPNet.merge_prototypes`).
The steps repeat until ``target`` prototypes are left; the paper has no target, so the step
that would go below it merges only the nearest candidates that reach it. After each step the last
layer is fine-tuned (``CE + λ_l1·L1``, Adam at ``lr_last_layer``, on cached similarities) by an
optimizer created for the *merged* model — the public ProtoPShare code keeps its optimizers
bound to detached copies after a merge, so its fine-tuning silently does nothing. Activation
vectors are re-computed after each step: with last-layer-only fine-tuning nothing before the
last layer changes and the survivors keep their vectors, so the new ones are exactly the
survivors' columns of the old ones (no extra pass); with ``feature_epochs > 0`` the add-on and
prototypes are trained (backbone frozen) through the trainer's public API, pushed again, and the
vectors come from a new pass.

**k-NN pruning** (ProtoPNet, Chen et al. 2019, §2.5): drop the prototypes that fail the
neighbour test (:mod:`p2p_cli.pruning.knn`), then fine-tune the last layer.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from p2p_cli.data.loaders import DataBundle
from p2p_cli.errors import P2PError
from p2p_cli.io.config import TrainConfig
from p2p_cli.models.protopnet import ProtoPNet, log_similarity
from p2p_cli.pruning.knn import knn_keep
from p2p_cli.pruning.protopshare import plan_merges, profile_dissimilarity, vector_dissimilarity
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.runtime.seeding import seed_everything
from p2p_cli.training.last_layer import fit_last_layer
from p2p_cli.training.objectives import TaskObjective
from p2p_cli.training.passes import min_distance_pass
from p2p_cli.training.schedule import Step
from p2p_cli.training.trainer import Adversary, Trainer

METHODS = ("protopshare", "knn")
DISTANCES = ("data", "vectors")


@dataclass(frozen=True)
class PruneOptions:
    """What to prune and how. ``step``: the rank k of each ProtoPShare step's threshold (at
    most that many merge per step; None: 10 % of the source's prototypes); ``distance``: ``data``
    (activation vectors over the training set, the paper's default) or ``vectors`` (the
    prototype vectors); ``fine_tune_epochs``
    None: the source config's ``last_layer_epochs``."""

    method: str = "protopshare"
    target: int | None = None
    step: int | None = None
    distance: str = "data"
    fine_tune_epochs: int | None = None
    feature_epochs: int = 0
    knn_k: int = 6
    knn_min: int = 3


@dataclass
class PruneResult:
    """The pruned model and its bookkeeping.

    origins[j]: source-model indices of the prototypes merged into prototype j (survivor first).
    rounds: one record per round (``round`` 0 is the source). provenance: new provenance records
    when the prototypes were pushed again (``feature_epochs > 0``), else None.
    """

    model: ProtoPNet
    origins: list[list[int]]
    rounds: list[dict[str, Any]]
    test_acc_before: float
    test_acc_after: float
    prediction_agreement: float
    removed: list[int] = field(default_factory=list)
    provenance: list[dict[str, Any]] | None = None


def round_size(opts: PruneOptions, m: int) -> int | None:
    """The threshold rank k of a ProtoPShare step (``step``, default ⌈10 % of ``m``⌉); None for k-NN."""
    if opts.method != "protopshare":
        return None
    return opts.step or max(1, math.ceil(0.1 * m))


def accuracy(model: ProtoPNet, min_distances: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Top-1 accuracy and predictions (N,) of the last layer on cached min distances (N, m)."""
    with torch.no_grad():
        pred = model.last_layer(log_similarity(min_distances)).argmax(1)
    return (float((pred == labels).float().mean()) if len(labels) else 0.0), pred


def last_layer_optimizer(model: ProtoPNet, cfg: TrainConfig) -> torch.optim.Adam:
    """A fresh Adam on *this* model's last layer (everything else frozen)."""
    model.requires_grad_(False)
    model.last_layer.weight.requires_grad_(True)
    return torch.optim.Adam([model.last_layer.weight], lr=cfg.lr_last_layer)


def prune_model(model: ProtoPNet, data: DataBundle, cfg: TrainConfig, opts: PruneOptions, rt: Runtime,
                reporter: Reporter, *, adversary: Adversary | None = None) -> PruneResult:
    """Prune ``model`` (not modified) with ``opts`` on ``data``; returns the new model and records.

    ``adversary``: the training-time adversary of ``cfg`` for ``feature_epochs`` (see
    :class:`~p2p_cli.training.trainer.Trainer`)."""
    t0 = time.perf_counter()
    m0 = model.num_prototypes
    epochs = cfg.last_layer_epochs if opts.fine_tune_epochs is None else opts.fine_tune_epochs
    validate(opts, m0)
    train_d, train_y = min_distance_pass(model, data.push, cfg, rt, reporter, "profiles (training set)")
    test_d, test_y = min_distance_pass(model, data.test, cfg, rt, reporter, "test")
    acc0, _ = accuracy(model, test_d, test_y)
    rounds: list[dict[str, Any]] = [{"round": 0, "stage": "source", "prototypes": m0, "test_acc": acc0}]
    origins = [[j] for j in range(m0)]
    removed: list[int] = []
    provenance = None
    gen = torch.Generator().manual_seed(cfg.seed)

    def fine_tune(current: ProtoPNet) -> dict[str, Any]:
        if epochs == 0:
            return {}
        opt = last_layer_optimizer(current, cfg)  # bound to the merged model's own parameters
        rows = fit_last_layer(current, opt, log_similarity(train_d), train_y, cfg, epochs, generator=gen, rt=rt)
        current.requires_grad_(False)
        return {"ce": rows[-1]["ce"], "train_acc": rows[-1]["train_acc"]}

    if opts.method == "knn":
        keep, counts = knn_keep(train_d, train_y, model.class_identity, opts.knn_k, opts.knn_min)
        kept = keep.nonzero().flatten().tolist()
        if not kept:
            raise P2PError(f"k-NN pruning would remove all {m0} prototypes (none has {opts.knn_min} of its "
                           f"{opts.knn_k} nearest training images in its class); lower --knn-min")
        removed = [j for j in range(m0) if not keep[j]]
        t_round = time.perf_counter()
        model = model.merge_prototypes([[j] for j in kept])
        origins = [[j] for j in kept]
        train_d, test_d = train_d[:, kept], test_d[:, kept]
        row = {"round": 1, "stage": "knn", "prototypes": len(kept), "removed": len(removed),
               "mean_own_neighbours": float(counts.float().mean())}
        row.update(fine_tune(model))
        row["test_acc"] = accuracy(model, test_d, test_y)[0]
        row["seconds"] = round(time.perf_counter() - t_round, 2)
        rounds.append(row)
    else:
        step = round_size(opts, m0)
        target = int(opts.target)  # type: ignore[arg-type]
        index = 0
        while model.num_prototypes > target:
            t_round = time.perf_counter()
            index += 1
            m = model.num_prototypes
            dissimilarity = (profile_dissimilarity(train_d) if opts.distance == "data"
                             else vector_dissimilarity(model.prototypes.detach().cpu()))
            groups, threshold = plan_merges(dissimilarity, min(step, m), limit=m - target)  # type: ignore[type-var]
            count = m - len(groups)
            model = model.merge_prototypes(groups)
            origins = [[o for j in g for o in origins[j]] for g in groups]
            survivors = [g[0] for g in groups]
            train_d, test_d = train_d[:, survivors], test_d[:, survivors]
            row: dict[str, Any] = {"round": index, "stage": "merge", "prototypes": model.num_prototypes,
                                   "merged": count, "threshold": threshold}
            if opts.feature_epochs:
                trainer = _feature_tuning(model, data, cfg, opts.feature_epochs, index, rt, reporter, adversary)
                provenance = trainer.state.prototypes
                train_d, train_y = min_distance_pass(model, data.push, cfg, rt, reporter, "profiles")
                test_d, test_y = min_distance_pass(model, data.test, cfg, rt, reporter, "test")
            row.update(fine_tune(model))
            row["test_acc"] = accuracy(model, test_d, test_y)[0]
            row["seconds"] = round(time.perf_counter() - t_round, 2)
            rounds.append(row)
    model.eval()
    # the final figure comes from a real forward pass of the final model, not from the caches
    final_d, final_y = min_distance_pass(model, data.test, cfg, rt, reporter, "test (pruned model)")
    acc1, pred = accuracy(model, final_d, final_y)
    _, cached_pred = accuracy(model, test_d, test_y)
    agreement = float((pred == cached_pred).float().mean()) if len(pred) else 1.0
    rounds[-1]["test_acc"] = acc1
    rounds[-1]["total_seconds"] = round(time.perf_counter() - t0, 2)
    return PruneResult(model=model, origins=origins, rounds=rounds, test_acc_before=acc0, test_acc_after=acc1,
                       prediction_agreement=agreement, removed=removed, provenance=provenance)


def _feature_tuning(model: ProtoPNet, data: DataBundle, cfg: TrainConfig, epochs: int, round_index: int,
                    rt: Runtime, reporter: Reporter, adversary: Adversary | None) -> Trainer:
    """Optional per-round tuning of add-on and prototypes (backbone frozen; the task loss on the
    augmented training set), then a push so the prototypes are training patches again. A new
    Trainer per round: its optimizers are created on the merged model's parameters. Round r's
    epoch e is seeded as step 1000·r + e of a schedule."""
    tune_cfg = dataclasses.replace(cfg, warm_train_backbone=False, epochs=epochs, warm_epochs=epochs)
    trainer = Trainer(tune_cfg, model, TaskObjective(tune_cfg), data, rt, None, reporter, adversary=adversary)
    base = 1_000 * round_index
    for e in range(epochs):
        seed_everything(cfg.seed * 100_003 + base + e)
        trainer.train_epoch(Step("epoch", "warm", e), base + e)
    trainer.push(Step("push", "push", epochs - 1))
    model.eval()
    return trainer


def validate(opts: PruneOptions, m: int) -> None:
    """One-line errors for options that cannot work on a model with ``m`` prototypes."""
    if opts.method not in METHODS:
        raise P2PError(f"unknown pruning method {opts.method!r} (choose {' or '.join(METHODS)})")
    if opts.fine_tune_epochs is not None and opts.fine_tune_epochs < 0:
        raise P2PError(f"--fine-tune-epochs must be ≥ 0, got {opts.fine_tune_epochs}")
    if opts.feature_epochs < 0:
        raise P2PError(f"--feature-epochs must be ≥ 0, got {opts.feature_epochs}")
    if opts.distance not in DISTANCES:
        raise P2PError(f"unknown --distance {opts.distance!r} (choose {' or '.join(DISTANCES)})")
    if opts.method == "knn":
        if opts.target is not None or opts.step is not None:
            raise P2PError("--target/--step apply to --method protopshare; k-NN pruning drops the prototypes "
                           "that fail the neighbour test (--knn-k, --knn-min)")
        if opts.feature_epochs or opts.distance != "data":
            raise P2PError("--feature-epochs and --distance apply to --method protopshare")
        if not 1 <= opts.knn_min <= opts.knn_k:
            raise P2PError(f"need 1 ≤ --knn-min ≤ --knn-k, got --knn-min {opts.knn_min} --knn-k {opts.knn_k}")
        return
    if opts.target is None:
        raise P2PError(f"ProtoPShare needs --target N (the prototypes to keep; the model has {m})")
    if opts.target >= m or opts.target < 1:
        raise P2PError(f"--target {opts.target} must be between 1 and {m - 1}: the model has {m} prototypes"
                       + (" (pruning only removes prototypes)" if opts.target >= m else ""))
    if opts.step is not None and opts.step < 1:
        raise P2PError(f"--step must be ≥ 1, got {opts.step}")
