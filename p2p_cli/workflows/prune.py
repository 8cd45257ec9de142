"""prune: ProtoPShare merge-pruning and ProtoPNet k-NN pruning of a trained run (SPEC §7).

**ProtoPShare** (Rymarczyk et al., KDD 2021, "data-dependent merge-pruning"): forward the
un-augmented training set once and keep every image's min distance to every prototype, the
(N, m) matrix ``P``; prototype j's *profile* is column ``P[:, j]``. The dissimilarity of two
prototypes is the squared L2 distance of their profiles, ``Σ_n (P[n, i] − P[n, j])²``. Each round
takes the pairs in increasing dissimilarity (Kruskal's order) and joins their groups until
``step`` prototypes are gone, i.e. it merges every pair below the threshold that removes exactly
``step`` prototypes (the threshold is recorded). A group keeps its lowest-index member's vector
(the survivor), sums the members' last-layer columns and serves the union of their classes
(:meth:`ProtoPNet.merge_prototypes`). Then the last layer is fine-tuned (``CE + λ_l1·L1``,
Adam at ``lr_last_layer``, on cached similarities) by an optimizer created for the *merged*
model — the public ProtoPShare code keeps its optimizers bound to detached copies after a merge,
so its fine-tuning silently does nothing. Profiles are re-computed after each round: with
last-layer-only fine-tuning nothing before the last layer changes and the survivors keep their
vectors, so the new profiles are exactly the survivors' columns of the old ones (no extra pass);
with ``feature_epochs > 0`` the add-on and prototypes are trained (backbone frozen), pushed again,
and the profiles come from a new forward pass.

**k-NN pruning** (ProtoPNet, Chen et al. 2019, §2.5 "prototype pruning"): for each prototype
take the k (6) training images whose closest patch is nearest to it; drop the prototype when
fewer than k' (3) of them belong to its class(es); then fine-tune the last layer.

The source run is never modified: the result is a new run whose config records the source and
the pruning, and whose ``prototypes.json`` says which source prototypes each survivor absorbed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from p2p_cli.data.loaders import DataBundle, build_datasets
from p2p_cli.errors import P2PError
from p2p_cli.io.atomic import atomic_write_json
from p2p_cli.io.checkpoint import weights_hash
from p2p_cli.io.config import TrainConfig, config_from_dict
from p2p_cli.io.rundir import RunDir, resolve_ref
from p2p_cli.models.factory import load_model, save_model
from p2p_cli.models.protopnet import ProtoPNet, log_similarity
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.runtime.seeding import seed_everything, set_deterministic
from p2p_cli.training.last_layer import fit_last_layer
from p2p_cli.training.objectives import TaskObjective
from p2p_cli.training.passes import min_distance_pass
from p2p_cli.training.schedule import Step
from p2p_cli.training.trainer import Adversary, Trainer
from p2p_cli.workflows.runs import open_run, training_adversary, write_run_config

METHODS = ("protopshare", "knn")
# metadata keys save_model writes itself; everything else of the source's metadata is carried over
_OWN_META = {"format", "arch", "stage", "p2p_version", "model_config", "class_names", "num_prototypes", "test_acc",
             "pruning"}


@dataclass(frozen=True)
class PruneOptions:
    """What to prune and how. ``step`` None: 10 % of the source's prototypes per round;
    ``fine_tune_epochs`` None: the source config's ``last_layer_epochs``."""

    method: str = "protopshare"
    target: int | None = None
    step: int | None = None
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


# -- the algorithms, on plain tensors ---------------------------------------------------------
def profile_dissimilarity(profiles: torch.Tensor) -> torch.Tensor:
    """ProtoPShare's data-dependent dissimilarity: (m, m) squared L2 between profile columns.

    profiles: (N, m) min distances of N training images to m prototypes.
    Returns ``D[i, j] = Σ_n (P[n, i] − P[n, j])²`` in float64 (≥ 0, zero diagonal).
    """
    p = profiles.double()
    sq = (p * p).sum(dim=0)  # (m,)
    d = sq[:, None] + sq[None, :] - 2.0 * (p.t() @ p)
    d = d.clamp_(min=0.0)
    d.fill_diagonal_(0.0)
    return d


def plan_merges(dissimilarity: torch.Tensor, count: int) -> tuple[list[list[int]], float]:
    """Greedy merging of the closest pairs until ``count`` prototypes are gone.

    dissimilarity: (m, m) symmetric. Pairs are taken in increasing dissimilarity (ties by index);
    a pair whose members are already in one group is skipped, otherwise the two groups join, the
    lower survivor index surviving. Returns (groups, threshold): ``m − count`` groups in
    increasing survivor order, each ``[survivor, absorbed…]`` (members in merge order), and the
    dissimilarity of the last merged pair (every merged pair is at or below it).
    """
    m = dissimilarity.shape[0]
    if not 0 <= count < m:
        raise ValueError(f"cannot remove {count} of {m} prototypes")
    parent = list(range(m))
    members: dict[int, list[int]] = {j: [j] for j in range(m)}

    def root(j: int) -> int:
        while parent[j] != j:
            parent[j] = parent[parent[j]]
            j = parent[j]
        return j

    threshold = float("nan")
    removed = 0
    if count:
        iu, ju = torch.triu_indices(m, m, offset=1)
        values = dissimilarity[iu, ju]
        order = torch.sort(values, stable=True).indices
        for i, j, v in zip(iu[order].tolist(), ju[order].tolist(), values[order].tolist(), strict=True):
            a, b = root(i), root(j)
            if a == b:
                continue
            keep, gone = min(a, b), max(a, b)
            parent[gone] = keep
            members[keep].extend(members.pop(gone))
            threshold = v
            removed += 1
            if removed == count:
                break
    return [members[r] for r in sorted(members)], threshold


def knn_keep(profiles: torch.Tensor, labels: torch.Tensor, class_identity: torch.Tensor, k: int, k_min: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """ProtoPNet's k-NN pruning test.

    profiles: (N, m) min distances (each image's closest patch); labels: (N,); class_identity (m, K).
    For prototype j, among the k images nearest to it, count those of one of j's classes; keep j
    when the count is ≥ ``k_min``. Returns (keep (m,) bool, own-class counts (m,) long).
    """
    k = min(k, profiles.shape[0])
    nearest = profiles.topk(k, dim=0, largest=False).indices  # (k, m)
    own = (class_identity.t()[labels] > 0)  # (N, m): image n is of one of prototype j's classes
    counts = own.gather(0, nearest).sum(dim=0)
    return counts >= k_min, counts


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


# -- the loop ----------------------------------------------------------------------------------
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
        rows = fit_last_layer(current, opt, log_similarity(train_d), train_y, cfg, epochs, generator=gen)
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
        step = opts.step or max(1, math.ceil(0.1 * m0))
        target = int(opts.target)  # type: ignore[arg-type]
        index = 0
        while model.num_prototypes > target:
            t_round = time.perf_counter()
            index += 1
            count = min(step, model.num_prototypes - target)
            groups, threshold = plan_merges(profile_dissimilarity(train_d), count)
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
    """Optional per-round tuning of add-on and prototypes (backbone frozen; ProtoPNet loss on the
    augmented training set), then a push so the prototypes are training patches again. A new
    Trainer per round: its optimizers are created on the merged model's parameters."""
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
    if opts.method == "knn":
        if opts.target is not None or opts.step is not None:
            raise P2PError("--target/--step apply to --method protopshare; k-NN pruning drops the prototypes "
                           "that fail the neighbour test (--knn-k, --knn-min)")
        if opts.feature_epochs:
            raise P2PError("--feature-epochs applies to --method protopshare")
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


# -- the command -------------------------------------------------------------------------------
def prune(ref: str, *, workdir: Path, name: str | None, opts: PruneOptions, rt: Runtime, reporter: Reporter,
          overwrite: bool = False, data_root: str | None = None, seed: int | None = None
          ) -> tuple[RunDir, dict[str, Any]]:
    """Prune run ``ref`` into a new run ``workdir/name`` (default ``<source>-pruned``)."""
    t0 = time.perf_counter()
    source = resolve_ref(ref, workdir)
    model, meta = load_model(source.model_path)
    if meta.get("arch") != "protopnet":
        raise P2PError(f"'{source.name}' is a {meta.get('arch')}: p2p prune merges ProtoPNet prototypes; a "
                       "ProtoTree is pruned at the end of its training (prune_threshold)")
    src_cfg = source.read_config()
    validate(opts, model.num_prototypes)
    overrides = {k: v for k, v in (("data_root", data_root), ("seed", seed)) if v is not None}
    cfg = config_from_dict({**src_cfg, **overrides}, source=str(source.config_path))
    name = name or f"{source.name}-pruned"
    if (Path(workdir) / name).resolve() == source.path.resolve():
        raise P2PError(f"--name {name!r} is the source run; pruning never modifies its source")
    if (Path(workdir) / name).exists() and not overwrite:  # fail before the work, not after it
        raise P2PError(f"run '{Path(workdir) / name}' already exists; pass --overwrite to replace it")
    source_hash = weights_hash(model.state_dict())
    set_deterministic(cfg.deterministic)
    seed_everything(cfg.seed)
    data = build_datasets(cfg)
    if list(meta.get("class_names", data.classes)) != data.classes:
        raise P2PError(f"the dataset's classes differ from the model's ({len(data.classes)} vs "
                       f"{len(meta['class_names'])}); pass the model's dataset with --data-root")
    model.to(rt.device)
    if rt.channels_last:
        model.backbone.to(memory_format=torch.channels_last)
    reporter.info(f"[bold]prune[/] {source.name} → {name}: {opts.method}, {model.num_prototypes} prototypes"
                  + (f" → {opts.target}" if opts.target else "") + f", device {rt.device}")
    result = prune_model(model, data, cfg, opts, rt, reporter, adversary=training_adversary(cfg, rt))
    run = open_run(workdir, name, rt, overwrite=overwrite, resume=False)  # created only once there is a result
    record = {"source": {"name": source.name, "path": str(source.path.resolve()), "weights_hash": source_hash},
              "method": opts.method, "target": opts.target if opts.method == "protopshare" else None,
              "step": _step(opts, model.num_prototypes), "fine_tune_epochs": cfg.last_layer_epochs
              if opts.fine_tune_epochs is None else opts.fine_tune_epochs, "feature_epochs": opts.feature_epochs,
              "rounds": len(result.rounds) - 1, "prototypes_before": model.num_prototypes,
              "prototypes_after": result.model.num_prototypes}
    if opts.method == "knn":
        record.update(knn_k=opts.knn_k, knn_min=opts.knn_min, removed=result.removed)
    if src_cfg.get("pruning"):
        record["previous"] = src_cfg["pruning"]
    if rt.is_main:
        extra_cfg = {k: v for k, v in src_cfg.items() if k == "teacher_run"}
        write_run_config(run, cfg, "prune", {**extra_cfg, "pruning": record})
        extra = {k: v for k, v in meta.items() if k not in _OWN_META}
        extra.update(test_acc=result.test_acc_after, pruning=record)
        save_model(run.model_path, result.model, stage="final", class_names=data.classes, extra=extra)
        atomic_write_json(run.prototypes_path, prototype_records(source, result, data.classes))
        run.write_metrics(result.rounds)
    summary = summarize(result, source, run, data.classes, model.class_identity, opts)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return run, summary


def _step(opts: PruneOptions, m: int) -> int | None:
    if opts.method != "protopshare":
        return None
    return opts.step or max(1, math.ceil(0.1 * m))


def prototype_records(source: RunDir, result: PruneResult, classes: list[str]) -> dict[str, Any]:
    """``prototypes.json`` of the pruned run: per prototype j, the source's provenance of its
    survivor (or the new push's, with ``feature_epochs``), its classes after the merge,
    ``source_prototype`` (survivor index in the source model), ``merged_from`` (source indices of
    the prototypes merged into it) and ``original_prototypes`` (indices in the first un-pruned
    ancestor, following earlier prunings)."""
    doc: dict[str, Any] = {}
    if source.prototypes_path.is_file():
        doc = json.loads(source.prototypes_path.read_text(encoding="utf-8"))
    src_records = doc.get("prototypes") or []
    identity = result.model.class_identity.cpu()
    out = []
    for j, members in enumerate(result.origins):
        if result.provenance is not None:
            rec = copy.deepcopy(result.provenance[j])
        elif members[0] < len(src_records):
            rec = copy.deepcopy(src_records[members[0]])
        else:
            rec = {}
        ids = torch.nonzero(identity[j] > 0).flatten().tolist()
        original: list[int] = []
        for i in members:
            prev = src_records[i] if i < len(src_records) else {}
            original.extend(prev.get("original_prototypes", [i]))
        rec.update(prototype=j, classes=[classes[c] for c in ids], class_ids=ids, source_prototype=members[0],
                   merged_from=members[1:], original_prototypes=original)
        out.append(rec)
    return {"grid": doc.get("grid"), "image_size": doc.get("image_size"), "prototypes": out}


def summarize(result: PruneResult, source: RunDir, run: RunDir, classes: list[str], source_identity: torch.Tensor,
              opts: PruneOptions) -> dict[str, Any]:
    """Before/after figures, the rounds, and per class: prototypes before/after, how many of its
    source prototypes were merged into another one (or removed), and how many prototypes it now
    shares with other classes."""
    src = source_identity.cpu() > 0  # (m0, K)
    new = result.model.class_identity.cpu() > 0  # (m, K)
    absorbed = torch.zeros(src.shape[0], dtype=torch.bool)
    for members in result.origins:
        absorbed[members[1:]] = True
    dropped = torch.zeros(src.shape[0], dtype=torch.bool)
    dropped[result.removed] = True
    shared = new.sum(dim=1) > 1
    per_class = [{"class": c, "before": int(src[:, k].sum()), "after": int(new[:, k].sum()),
                  "merged_away": int((src[:, k] & absorbed).sum()), "removed": int((src[:, k] & dropped).sum()),
                  "shared": int((new[:, k] & shared).sum())} for k, c in enumerate(classes)]
    return {"run": str(run.path), "source": source.name, "method": opts.method,
            "prototypes_before": src.shape[0], "prototypes_after": new.shape[0],
            "test_acc_before": result.test_acc_before, "test_acc_after": result.test_acc_after,
            "prediction_agreement": result.prediction_agreement,
            "merges": sum(len(o) - 1 for o in result.origins), "removed": len(result.removed),
            "multi_class_prototypes": int(shared.sum()), "rounds": result.rounds, "classes": per_class}
