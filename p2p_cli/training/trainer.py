"""The one trainer behind train-teacher and distill: stages, push, last layer, snapshots, resume.

The schedule is a flat list of steps (``stages.plan``). After every step the trainer writes an
atomic snapshot (weights, optimizer states, metrics so far); ``--resume`` reloads it and runs
the remaining steps. Each step reseeds every RNG from (seed, step index), so data order and
augmentation of a resumed run are those of an uninterrupted one — the RNG state is derived
rather than stored, which is what makes a resumed run bit-identical in deterministic mode.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from p2p_cli.data.loaders import DataBundle, eval_loader, train_loader
from p2p_cli.io.checkpoint import flatten_optimizer, load_tensors, unflatten_optimizer
from p2p_cli.io.config import TrainConfig
from p2p_cli.io.rundir import RunDir
from p2p_cli.models.factory import model_metadata, save_model
from p2p_cli.models.protopnet import ProtoPNet, log_similarity
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.distributed import all_reduce_sum, gather_rows
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.runtime.seeding import seed_everything
from p2p_cli.training import schedule as S
from p2p_cli.training.objectives import last_layer_terms
from p2p_cli.training.provenance import provenance_records, summarize
from p2p_cli.training.push import push_prototypes


@dataclass
class TrainState:
    step: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    prototypes: list[dict[str, Any]] = field(default_factory=list)
    grid: list[int] | None = None


class Trainer:
    """Runs the schedule for ``model`` under ``objective`` (see ``training/objectives.py``)."""

    def __init__(self, cfg: TrainConfig, model: ProtoPNet, objective: Any, data: DataBundle, rt: Runtime,
                 run: RunDir | None, reporter: Reporter, *, head_frozen: bool = False,
                 metadata: dict[str, Any] | None = None) -> None:
        self.cfg, self.model, self.objective, self.data, self.rt = cfg, model, objective, data, rt
        self.run, self.reporter, self.head_frozen = run, reporter, head_frozen
        self.metadata = metadata or {}
        self.extra = nn.ModuleDict(objective.extra_modules()).to(rt.device)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.state = TrainState()
        self.steps = S.plan(cfg)
        self.scaler = torch.amp.GradScaler(enabled=rt.amp_dtype == torch.float16)

    # -- optimisation -------------------------------------------------------------------------
    def _groups(self) -> dict[str, list[nn.Parameter]]:
        groups = self.model.parameter_groups()
        groups["extra"] = list(self.extra.parameters())
        return groups

    def _lr(self, group: str) -> tuple[float, float]:
        c = self.cfg
        return {"backbone": (c.lr_backbone, c.weight_decay), "add_on": (c.lr_add_on, c.weight_decay),
                "prototypes": (c.lr_prototypes, 0.0), "extra": (c.lr_add_on, c.weight_decay),
                "last_layer": (c.lr_last_layer, 0.0), "leaves": (c.lr_leaves, 0.0)}[group]

    def optimizer(self, stage: str) -> torch.optim.Optimizer | None:
        """The stage's Adam (created once, kept across epochs and pushes, as ProtoPNet does)."""
        if stage not in self.optimizers:
            spec = S.stage_spec(stage, self.cfg, head_frozen=self.head_frozen)
            groups = self._groups()
            param_groups = []
            for name in spec.groups:
                params = groups[name]
                if params:
                    lr, wd = self._lr(name)
                    param_groups.append({"params": params, "lr": lr, "initial_lr": lr, "weight_decay": wd,
                                         "name": name})
            if not param_groups:
                return None
            # ProtoTree trains with AdamW (Nauta et al. 2021), ProtoPNet with Adam
            optim = torch.optim.AdamW if self.cfg.arch == "prototree" else torch.optim.Adam
            self.optimizers[stage] = optim(param_groups)
        return self.optimizers[stage]

    def _freeze_except(self, stage: str) -> None:
        spec = S.stage_spec(stage, self.cfg, head_frozen=self.head_frozen)
        for name, params in self._groups().items():
            for p in params:
                p.requires_grad_(name in spec.groups)

    def _sync_grads(self, params: list[nn.Parameter]) -> None:
        """Data parallelism: average gradients over the torch.distributed ranks."""
        if not self.rt.distributed:
            return
        for p in params:
            if p.grad is not None:
                all_reduce_sum(p.grad, self.rt).div_(self.rt.world_size)

    # -- steps --------------------------------------------------------------------------------
    def fit(self, *, resume: bool = False) -> TrainState:
        if resume:
            self._load_snapshot()
            self.reporter.info(f"resuming at step {self.state.step + 1}/{len(self.steps)}")
        stage_rows: list[dict[str, Any]] = []
        for i in range(self.state.step, len(self.steps)):
            step = self.steps[i]
            seed_everything(self.cfg.seed * 100_003 + i)
            t0 = time.perf_counter()
            if step.kind == "epoch":
                rows = [self._train_epoch(step, i)]
            elif step.kind == "push":
                rows = [self._push(step)]
            elif step.kind == "prune_tree":
                rows = [self._prune_tree(step)]
            else:
                rows = self._last_layer(step)
            for r in rows:
                r.setdefault("seconds", round(time.perf_counter() - t0, 2))
            self.state.records.extend(rows)
            stage_rows.extend(rows)
            nxt = self.steps[i + 1] if i + 1 < len(self.steps) else None
            if nxt is None or nxt.stage != step.stage:
                shown = stage_rows[-1:] if step.stage == "last_layer" else stage_rows
                self.reporter.table(f"stage {step.stage}", shown, _columns(shown))
                stage_rows = []
            self.state.step = i + 1
            self._save_snapshot()
        self._finish()
        return self.state

    def _train_epoch(self, step: S.Step, index: int) -> dict[str, Any]:
        cfg, rt, model = self.cfg, self.rt, self.model
        self._freeze_except(step.stage)
        opt = self.optimizer(step.stage)
        if opt is not None:
            factor = S.lr_factor(cfg, step.stage, step.epoch)
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"] * factor
        model.train()
        self.extra.train()
        epoch_seed = cfg.seed * 100_003 + index
        loader = train_loader(self.data.train, cfg, rt, epoch_seed=epoch_seed)
        augment_rng = torch.Generator().manual_seed(epoch_seed + (rt.rank + 1) * 7_919)  # a stream per rank
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(step.epoch)
        trainable = [p for g in opt.param_groups for p in g["params"]] if opt else []
        sums: dict[str, float] = defaultdict(float)
        correct = seen = 0
        kill_at = _kill_point(index)
        with self.reporter.task(f"epoch {step.epoch + 1}/{cfg.epochs} {step.stage}", len(loader)) as advance:
            for batch, (images, labels, _) in enumerate(loader):
                if batch == kill_at:  # fault injection for the resume tests: die like `kill -9`
                    os.kill(os.getpid(), signal.SIGKILL)
                images = rt.images(self.data.augment(images.to(rt.device, non_blocking=True), augment_rng))
                labels = labels.to(rt.device)
                if cfg.adversarial == "fgsm":  # robustness remedy: train on FGSM examples (see below)
                    images = self._adversarial(images, labels)
                with rt.autocast():
                    out = model(images)
                terms = self.objective.loss(model, out, images, labels, step.stage)
                if opt is not None:
                    opt.zero_grad(set_to_none=True)
                    self.scaler.scale(terms["total"]).backward()
                    self._sync_grads(trainable)
                    self.scaler.step(opt)
                    self.scaler.update()
                if self._leaves_derivative_free:
                    self._update_leaves(out.min_distances.detach(), labels, len(loader))
                n = len(labels)
                for k, v in terms.items():
                    sums[k] += float(v.detach()) * n
                correct += int((out.logits.detach().argmax(1) == labels).sum())
                seen += n
                advance(loss=sums["total"] / seen, acc=correct / seen)
        stats = torch.tensor([correct, seen] + [sums[k] for k in sorted(sums)], dtype=torch.float64)
        stats = all_reduce_sum(stats.to(rt.device), rt).cpu()
        row: dict[str, Any] = {"epoch": step.epoch + 1, "stage": step.stage}
        row.update({k: float(stats[2 + i] / stats[1]) for i, k in enumerate(sorted(sums))})
        row["train_acc"] = float(stats[0] / stats[1])
        row["test_acc"] = self.test_accuracy()
        return row

    @property
    def _leaves_derivative_free(self) -> bool:
        """A ProtoTree whose leaves follow the derivative-free rule (and are not reused frozen)."""
        return getattr(self.model, "derivative_free", False) and not self.head_frozen

    def _update_leaves(self, min_distances: torch.Tensor, labels: torch.Tensor, batches: int) -> None:
        """ProtoTree's derivative-free leaf update after a batch, smoothed over an epoch
        (α = 1 / batches per epoch); under torch.distributed the statistics of all ranks are summed."""
        stats = self.model.leaf_statistics(min_distances.float(), labels)
        count = torch.tensor([float(len(labels))], device=stats.device)
        stats, count = all_reduce_sum(stats, self.rt), all_reduce_sum(count, self.rt)
        self.model.update_leaves(stats, int(count.item()), 1.0 / max(batches, 1))

    def _prune_tree(self, step: S.Step) -> dict[str, Any]:
        """ProtoTree pruning after training: drop subtrees of (nearly) uniform leaves."""
        sizes = self.model.prune_(self.cfg.prune_threshold)
        self.reporter.info(f"pruned tree: {sizes['leaves_before']} → {sizes['leaves_after']} leaves, "
                           f"{sizes['prototypes_before']} → {sizes['prototypes_after']} prototypes")
        return {"epoch": step.epoch + 1, "stage": "prune_tree", **sizes, "test_acc": self.test_accuracy()}

    def _adversarial(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Fast adversarial training (Wong et al. 2020; Hoffmann et al. 2021, App. F.1): the batch is
        replaced by its FGSM examples (random start, one step of ``adv_step``, radius ``adv_eps``)."""
        from p2p_cli.attacks.fgsm import fgsm_examples

        return fgsm_examples(self.model, images, labels, self.rt, eps=self.cfg.adv_eps, step=self.cfg.adv_step)

    def _min_distances(self, ds, description: str) -> tuple[torch.Tensor, torch.Tensor]:
        return min_distance_pass(self.model, ds, self.cfg, self.rt, self.reporter, description)

    def test_accuracy(self, cached: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
        dists, labels = cached or self._min_distances(self.data.test, "test")
        with torch.no_grad():
            logits = self.model.logits_from_min_distances(dists)
        return float((logits.argmax(1) == labels).float().mean()) if len(labels) else 0.0

    def _push(self, step: S.Step) -> dict[str, Any]:
        loader = eval_loader(self.data.push, self.cfg.test_batch_size, self.cfg.workers, self.rt)
        with self.reporter.task("push", len(loader.dataset)) as advance:
            result = push_prototypes(self.model, loader, self.rt, progress=advance)
        self.state.prototypes = provenance_records(result, self.data.index, self.model.class_identity.cpu(),
                                                   self.cfg.image_size, crop_bbox=self.cfg.crop_bbox,
                                                   model=self.model)
        self.state.grid = list(result.grid)
        summary = summarize(self.state.prototypes)
        return {"epoch": step.epoch + 1, "stage": "push", "push_distance": summary["mean_distance_before"],
                "test_acc": self.test_accuracy()}

    def _last_layer(self, step: S.Step) -> list[dict[str, Any]]:
        """Convex last-layer optimisation on cached similarities (everything before h is frozen).

        The similarities of all un-augmented training images are computed once (one forward
        pass); each epoch then shuffles them in mini-batches of ``batch_size``."""
        cfg, model = self.cfg, self.model
        test_cache = self._min_distances(self.data.test, "test")
        if self.head_frozen or cfg.last_layer_epochs == 0:
            return [{"epoch": step.epoch + 1, "stage": "last_layer", "test_acc": self.test_accuracy(test_cache)}]
        self._freeze_except("last_layer")
        opt = self.optimizer("last_layer")
        assert opt is not None
        train_d, train_y = self._min_distances(self.data.push, "cache similarities")
        rows = fit_last_layer(model, opt, log_similarity(train_d), train_y, cfg, cfg.last_layer_epochs,
                              generator=torch.Generator().manual_seed(cfg.seed),
                              test_accuracy=lambda: self.test_accuracy(test_cache))
        return [{"epoch": step.epoch + 1, "stage": "last_layer", **row} for row in rows]

    # -- persistence --------------------------------------------------------------------------
    def _save_snapshot(self) -> None:
        if self.run is None or not self.rt.is_main:
            return
        tensors = dict(self.model.state_dict())
        tensors.update({f"__extra__/{k}": v for k, v in self.extra.state_dict().items()})
        optim_meta = {}
        for name, opt in self.optimizers.items():
            t, meta = flatten_optimizer(name, opt.state_dict())
            tensors.update(t)
            optim_meta[name] = meta
        meta = model_metadata(self.model, stage=f"snapshot-{self.state.step}", class_names=self.data.classes)
        meta["snapshot"] = {"step": self.state.step, "records": self.state.records,
                            "prototypes": self.state.prototypes, "grid": self.state.grid,
                            "optimizers": optim_meta,
                            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None}
        from p2p_cli.io.checkpoint import save_tensors

        save_tensors(self.run.snapshot_path, tensors, meta)
        self.run.write_metrics(self.state.records)

    def _load_snapshot(self) -> None:
        assert self.run is not None
        tensors, raw = load_tensors(self.run.snapshot_path)
        snap = json.loads(raw["snapshot"])
        model_t = {k: v for k, v in tensors.items() if not k.startswith("__")}
        self.model.load_state_dict(model_t)
        extra_t = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("__extra__/")}
        if extra_t:
            self.extra.load_state_dict(extra_t)
        for name, meta in snap["optimizers"].items():
            opt = self.optimizer(name)
            assert opt is not None
            opt.load_state_dict(unflatten_optimizer(name, tensors, meta))
        if snap.get("scaler"):
            self.scaler.load_state_dict(snap["scaler"])
        self.state = TrainState(step=snap["step"], records=snap["records"], prototypes=snap["prototypes"],
                                grid=snap.get("grid"))

    def _finish(self) -> None:
        if self.run is None or not self.rt.is_main:
            return
        from p2p_cli.io.atomic import atomic_write_json

        last = self.state.records[-1] if self.state.records else {}
        extra = dict(self.metadata)
        extra["test_acc"] = last.get("test_acc")
        save_model(self.run.model_path, self.model, stage="final", class_names=self.data.classes, extra=extra)
        atomic_write_json(self.run.prototypes_path, {"grid": self.state.grid, "image_size": self.cfg.image_size,
                                                     "prototypes": self.state.prototypes})
        self.run.write_metrics(self.state.records)
        self.run.snapshot_path.unlink(missing_ok=True)


@torch.no_grad()
def min_distance_pass(model: ProtoPNet, ds, cfg: TrainConfig, rt: Runtime, reporter: Reporter,
                      description: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One eval pass over ``ds``: (min distances (N, m) fp32, labels (N,)), in dataset order.

    Under torch.distributed each rank computes its shard and every rank gets all rows."""
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


def fit_last_layer(model: ProtoPNet, opt: torch.optim.Optimizer, sims: torch.Tensor, labels: torch.Tensor,
                   cfg: TrainConfig, epochs: int, *, generator: torch.Generator,
                   test_accuracy: Callable[[], float] | None = None) -> list[dict[str, Any]]:
    """Convex last-layer optimisation (ProtoPNet's last-layer stage): ``CE + λ_l1·L1`` in h only.

    sims: (N, m) cached log similarities of the un-augmented training images; labels: (N,).
    Each epoch shuffles them (``generator``) into mini-batches of ``cfg.batch_size`` and takes one
    step of ``opt`` per batch. ``opt`` must be bound to ``model.last_layer``'s parameters: after
    the model is rebuilt (pruning), create a new optimizer. Under torch.distributed every rank
    holds all rows, so the steps are identical and need no gradient sync.
    Returns one row per epoch: ``ll_epoch``, loss terms, ``train_acc`` (and ``test_acc``).
    """
    with _one_thread(sims.device.type == "cpu"):
        return _fit_last_layer(model, opt, sims, labels, cfg, epochs, generator, test_accuracy)


@contextlib.contextmanager
def _one_thread(enabled: bool) -> Iterator[None]:
    """Run tiny CPU ops (a K×m last layer) on one thread: with more, OpenMP's synchronisation
    costs more than the work — 50× slower on a busy 2-core machine (measured), never faster."""
    threads = torch.get_num_threads()
    if enabled:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fit_last_layer(model: ProtoPNet, opt: torch.optim.Optimizer, sims: torch.Tensor, labels: torch.Tensor,
                    cfg: TrainConfig, epochs: int, generator: torch.Generator,
                    test_accuracy: Callable[[], float] | None) -> list[dict[str, Any]]:
    rows = []
    for e in range(epochs):
        order = torch.randperm(len(labels), generator=generator).to(sims.device)
        sums: dict[str, float] = defaultdict(float)
        correct = 0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            logits = model.last_layer(sims[idx])
            terms = last_layer_terms(model, logits, labels[idx], cfg)
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            opt.step()
            for k, v in terms.items():
                sums[k] += float(v.detach()) * len(idx)
            correct += int((logits.argmax(1) == labels[idx]).sum())
        n = max(len(labels), 1)
        row: dict[str, Any] = {"ll_epoch": e + 1}
        row.update({k: v / n for k, v in sums.items()})
        row["train_acc"] = correct / n
        if test_accuracy is not None:
            row["test_acc"] = test_accuracy()
        rows.append(row)
    return rows


def _kill_point(step: int) -> int | None:
    """``P2P_TEST_KILL_AT=STEP:BATCH`` makes the process SIGKILL itself at that batch (tests only)."""
    spec = os.environ.get("P2P_TEST_KILL_AT")
    if not spec:
        return None
    at_step, at_batch = (int(v) for v in spec.split(":"))
    return at_batch if at_step == step else None


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols and k not in ("seconds", "stage"):
                cols.append(k)
    return cols + ["seconds"]
