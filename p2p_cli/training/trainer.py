"""The one trainer behind train-teacher, distill and prune's feature tuning.

The schedule is a flat list of steps from the architecture's recipe
(:mod:`p2p_cli.training.recipes`): training epochs, pushes, last-layer optimisations, the
architecture's own pruning. After every step the trainer writes an atomic snapshot
(:mod:`p2p_cli.training.snapshot`); ``--resume`` reloads it and runs the remaining steps. Each
step reseeds every RNG from (seed, step index), so data order and augmentation of a resumed run
are those of an uninterrupted one — the RNG state is derived rather than stored, which is what
makes a resumed run bit-identical in deterministic mode.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from p2p_cli.data.loaders import DataBundle, eval_loader, train_loader
from p2p_cli.errors import P2PError
from p2p_cli.io.atomic import atomic_write_json
from p2p_cli.io.config import TrainConfig
from p2p_cli.io.metrics_log import RunLogs, lr_fields
from p2p_cli.io.model_card import write_model_card
from p2p_cli.io.rundir import RunDir
from p2p_cli.models.factory import save_model
from p2p_cli.models.protopnet import PrototypeNetwork, log_similarity
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.distributed import all_reduce_sum, barrier, loss_weight
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.runtime.seeding import seed_everything
from p2p_cli.training.guard import DivergenceWatch, check_grad_norm, check_parameters, check_terms
from p2p_cli.training.last_layer import fit_last_layer, last_layer_terms
from p2p_cli.training.passes import min_distance_pass
from p2p_cli.training.provenance import provenance_records, summarize
from p2p_cli.training.push import push_prototypes
from p2p_cli.training.recipes import recipe_for
from p2p_cli.training.replicas import StageReplicas
from p2p_cli.training.schedule import Step, group_lr, last_layer_data
from p2p_cli.training.snapshot import TrainState, read_snapshot, save_snapshot

# (model, images (B, 3, S, S), labels (B,)) → the batch to train on instead, e.g. FGSM examples
Adversary = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class Trainer:
    """Runs the recipe's schedule for ``model`` under ``objective`` (see ``training/objectives.py``).

    ``run``: where snapshots, metrics and the final model go (None: nothing is written).
    ``head_frozen``: the decision head is a teacher's, kept frozen (distill ``--head frozen``).
    ``metadata``: extra keys for the saved model. ``adversary``: replaces every training batch by
    adversarial examples (required when ``cfg.adversarial`` is not ``none``).
    """

    def __init__(self, cfg: TrainConfig, model: PrototypeNetwork, objective: Any, data: DataBundle, rt: Runtime,
                 run: RunDir | None, reporter: Reporter, *, head_frozen: bool = False,
                 metadata: dict[str, Any] | None = None, adversary: Adversary | None = None) -> None:
        if cfg.adversarial != "none" and adversary is None:
            raise ValueError(f"adversarial = {cfg.adversarial!r} needs an adversary")  # a bug, not a user error
        self.cfg, self.model, self.objective, self.data, self.rt = cfg, model, objective, data, rt
        self.run, self.reporter, self.head_frozen = run, reporter, head_frozen
        self.metadata = metadata or {}
        self.adversary = adversary if cfg.adversarial != "none" else None
        self.recipe = recipe_for(model.arch)
        self.joint_head = bool(getattr(objective, "trains_head_jointly", False))
        self.extra = nn.ModuleDict(objective.extra_modules()).to(rt.device)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.state = TrainState()
        self.logs: RunLogs | None = None
        self.steps = self.recipe.plan(cfg)
        self.scaler = torch.amp.GradScaler(enabled=rt.amp_dtype == torch.float16)
        self.replicas = StageReplicas(model, self.extra, objective, rt)  # DDP wrappers per stage
        self.watch = DivergenceWatch()
        self._test_cache: tuple[torch.Tensor, torch.Tensor] | None = None  # see test_min_distances

    # -- optimisation -------------------------------------------------------------------------
    def _groups(self) -> dict[str, list[nn.Parameter]]:
        groups = self.model.parameter_groups()
        groups["extra"] = list(self.extra.parameters())
        return groups

    def optimizer(self, stage: str) -> torch.optim.Optimizer | None:
        """The stage's optimizer (the recipe's class), created once and kept across epochs and
        pushes, as ProtoPNet does; None when the stage trains nothing."""
        if stage not in self.optimizers:
            groups = self._groups()
            param_groups = []
            trained = self.recipe.stage_groups(stage, self.cfg, head_frozen=self.head_frozen,
                                               joint_head=self.joint_head)
            for name in trained:
                params = groups[name]
                if params:
                    lr, wd = group_lr(self.cfg, name)
                    param_groups.append({"params": params, "lr": lr, "initial_lr": lr, "weight_decay": wd,
                                         "name": name})
            if not param_groups:
                return None
            self.optimizers[stage] = self.recipe.optimizer(param_groups)
        return self.optimizers[stage]

    def _freeze_except(self, stage: str) -> None:
        trained = self.recipe.stage_groups(stage, self.cfg, head_frozen=self.head_frozen,
                                           joint_head=self.joint_head)
        for name, params in self._groups().items():
            for p in params:
                p.requires_grad_(name in trained)

    # -- the schedule -------------------------------------------------------------------------
    def fit(self, *, resume: bool = False) -> TrainState:
        """Run the remaining steps (all of them, or those after the snapshot with ``resume``),
        print a table per stage, snapshot after every step, and save the final run."""
        if resume:
            self._load_snapshot()
            self.reporter.info(f"resuming at step {self.state.step + 1}/{len(self.steps)}")
        if self.run is not None and self.rt.is_main:  # metrics.csv (+ TensorBoard) as the run goes
            self.logs = RunLogs(self.run.path, tensorboard=self.cfg.log == "tensorboard",
                                start=len(self.state.records))
        stage_rows: list[dict[str, Any]] = []
        for row in self.state.records[:1]:  # a resumed run compares with its own first epoch
            if "total" in row:
                self.watch.update(float(row["total"]), "")
        for i in range(self.state.step, len(self.steps)):
            step = self.steps[i]
            seed_everything(self.cfg.seed * 100_003 + i)
            t0 = time.perf_counter()
            rows = self._run(step, i)
            if step.kind != "epoch":
                self.replicas.reset()  # a push, last layer or pruning step: re-wrap for the next epoch
            for r in rows:
                r.setdefault("seconds", round(time.perf_counter() - t0, 2))
            where = f"step {i + 1}/{len(self.steps)} ({step.stage}, epoch {step.epoch + 1})"
            check_parameters({"": self.model, "extra.": self.extra}, where)  # never snapshot NaN weights
            for row in rows if step.kind == "last_layer" else []:  # the epochs' batches are watched as they go
                self.watch.update(float(row.get("total", 0.0)), where)
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
        barrier(self.rt)  # the other ranks return once rank 0 has written the run (a next command reads it)
        return self.state

    def _run(self, step: Step, index: int) -> list[dict[str, Any]]:
        if step.kind == "epoch":
            return [self.train_epoch(step, index)]
        if step.kind == "push":
            return [self.push(step)]
        if step.kind == "prune":
            return [self._prune(step)]
        if step.kind == "last_layer":
            return self._last_layer(step, index)
        raise ValueError(f"unknown step kind {step.kind!r}")

    def train_epoch(self, step: Step, index: int) -> dict[str, Any]:
        """One epoch of ``step.stage`` over the augmented training set; returns its metric row.

        ``index`` (the step's position in a schedule) seeds data order and augmentation; the
        caller seeds the global RNGs (``fit`` does, from ``cfg.seed`` and the index). The
        learning rates are the recipe's factor for ``step.epoch`` times the initial ones.
        """
        self._freeze_except(step.stage)
        opt = self.optimizer(step.stage)
        if opt is not None:
            factor = self.recipe.lr_factor(self.cfg, step.stage, step.epoch)
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"] * factor
        row = self._train_pass(step, opt, self.cfg.seed * 100_003 + index,
                               f"epoch {step.epoch + 1}/{self.cfg.epochs} {step.stage}",
                               lambda out, images, labels: self.objective.loss(self.model, out, images, labels,
                                                                               step.stage))
        if self._evaluate_after(step, index):
            row["test_acc"] = self.test_accuracy()
        return row

    def _train_pass(self, step: Step, opt: torch.optim.Optimizer | None, epoch_seed: int,
                    title: str, loss: Callable[[Any, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]
                    ) -> dict[str, Any]:
        """One pass over the augmented training set in train mode, one step of ``opt`` per batch
        on ``loss(out, images, labels)["total"]``; order and augmentation depend only on
        ``epoch_seed``. Returns the row: ``epoch``, ``stage``, mean loss terms, ``train_acc``, lrs."""
        cfg, rt, model = self.cfg, self.rt, self.model
        self._test_cache = None  # weights and BatchNorm statistics change: the min distances too
        model.train()
        self.extra.train()
        loader = train_loader(self.data.train, cfg, rt, epoch_seed=epoch_seed)
        augment_rng = torch.Generator().manual_seed(epoch_seed + (rt.rank + 1) * 7_919)  # a stream per rank
        replica: nn.Module | None = None if opt is not None else model
        global_sizes = loader.batch_sampler.global_sizes()
        trainable = [p for g in opt.param_groups for p in g["params"]] if opt else []
        sums: dict[str, float] = defaultdict(float)
        correct = seen = 0
        self.recipe.before_epoch(model, head_frozen=self.head_frozen)
        with self.reporter.task(title, len(loader)) as advance:
            for batch, (images, labels, _) in enumerate(loader):
                images = rt.images(self.data.augment(images.to(rt.device, non_blocking=True), augment_rng))
                labels = labels.to(rt.device)
                if self.adversary is not None:  # robustness remedy: train on adversarial examples
                    images = self.adversary(model, images, labels)
                if replica is None:
                    replica = self.replicas.get(step.stage, images, labels)
                with rt.autocast():
                    out = replica(images)
                terms = loss(out, images, labels)
                where = f"step {self.state.step + 1}/{len(self.steps)} ({step.stage}, epoch {step.epoch + 1}, " \
                        f"batch {batch + 1})"
                check_terms(terms, where)
                if opt is not None:
                    opt.zero_grad(set_to_none=True)
                    weight = loss_weight(len(labels), global_sizes[batch], rt)  # DDP averages: see there
                    self.scaler.scale(terms["total"] * weight).backward()
                    if not self.scaler.is_enabled():  # fp16's scaler skips non-finite steps by design
                        check_grad_norm(trainable, where)
                    self.scaler.step(opt)
                    self.scaler.update()
                if step.kind == "epoch":
                    self.recipe.after_batch(model, out, labels, len(loader), rt, head_frozen=self.head_frozen)
                n = len(labels)
                for k, v in terms.items():
                    sums[k] += float(v.detach()) * n
                self.watch.update(float(terms["total"].detach()), where)
                correct += int((out.logits.detach().argmax(1) == labels).sum())
                seen += n
                advance(loss=sums["total"] / seen, acc=correct / seen)
        stats = torch.tensor([correct, seen] + [sums[k] for k in sorted(sums)], dtype=torch.float64)
        stats = all_reduce_sum(stats.to(rt.device), rt).cpu()
        row: dict[str, Any] = {"epoch": step.epoch + 1, "stage": step.stage}
        row.update({k: float(stats[2 + i] / stats[1]) for i, k in enumerate(sorted(sums))})
        row["train_acc"] = float(stats[0] / stats[1])
        if opt is not None:
            row.update(lr_fields(opt.param_groups))
        return row

    def _evaluate_after(self, step: Step, index: int) -> bool:
        """Test accuracy after every ``eval_every``-th epoch, the last epoch, and an epoch a push follows."""
        if (step.epoch + 1) % self.cfg.eval_every == 0 or step.epoch + 1 == self.cfg.epochs:
            return True
        in_plan = index + 1 < len(self.steps) and self.steps[index] == step  # (prune's tuning epochs are not)
        return in_plan and self.steps[index + 1].kind != "epoch"

    def push(self, step: Step) -> dict[str, Any]:
        """Project every prototype onto its nearest own-class training patch (in place); keeps
        the provenance records in ``state``; returns the metric row."""
        loader = eval_loader(self.data.push, self.cfg.test_batch_size, self.cfg.workers, self.rt)
        self._test_cache = None  # the push moves the prototypes
        with self.reporter.task("push", len(loader.dataset)) as advance:
            result = push_prototypes(self.model, loader, self.rt, progress=advance)
        self.state.prototypes = provenance_records(result, self.data.index, self.model.class_identity.cpu(),
                                                   self.cfg.image_size, crop_bbox=self.cfg.crop_bbox,
                                                   model=self.model)
        self.state.grid = list(result.grid)
        summary = summarize(self.state.prototypes)
        return {"epoch": step.epoch + 1, "stage": "push", "push_distance": summary["mean_distance_before"],
                "test_acc": self.test_accuracy()}

    def test_accuracy(self) -> float:
        """Top-1 accuracy on the test set, from :meth:`test_min_distances` and the current last layer."""
        dists, labels = self.test_min_distances()
        with torch.no_grad():
            logits = self.model.logits_from_min_distances(dists)
        return float((logits.argmax(1) == labels).float().mean()) if len(labels) else 0.0

    def test_min_distances(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The test set's (min distances (N, m), labels (N,)): one eval pass, reused until a training
        pass, a push or a pruning changes what they depend on (not the last layer: logits are
        recomputed from them), so the push's accuracy row and the last-layer stage share one pass."""
        if self._test_cache is None:
            self._test_cache = self._min_distances(self.data.test, "test")
        return self._test_cache

    def _min_distances(self, ds: Dataset, description: str) -> tuple[torch.Tensor, torch.Tensor]:
        return min_distance_pass(self.model, ds, self.cfg, self.rt, self.reporter, description)

    def _prune(self, step: Step) -> dict[str, Any]:
        sizes = self.recipe.prune(self.model, self.cfg, self.reporter)
        self._test_cache = None
        return {"epoch": step.epoch + 1, "stage": step.stage, **sizes, "test_acc": self.test_accuracy()}

    def _last_layer(self, step: Step, index: int) -> list[dict[str, Any]]:
        """ProtoPNet's last-layer stage, ``CE + λ_l1·L1`` in h only (everything before it frozen).

        ``last_layer_data`` cached: the similarities of all un-augmented training images are
        computed once (one forward pass); each epoch shuffles them in mini-batches of
        ``batch_size``. augmented: each epoch is a pass over the augmented training loader in
        train mode, as ProtoPNet's and the Proto2Proto code's ``train_epoch`` (one forward per
        batch, no backward through the frozen features; BatchNorm keeps batch statistics and
        updates its running ones, as there); test accuracy is measured once, at the end."""
        cfg, model = self.cfg, self.model
        if self.head_frozen or cfg.last_layer_epochs == 0:
            return [{"epoch": step.epoch + 1, "stage": "last_layer", "test_acc": self.test_accuracy()}]
        self._freeze_except("last_layer")
        opt = self.optimizer("last_layer")
        assert opt is not None
        if last_layer_data(cfg) == "augmented":
            rows = []
            for e in range(cfg.last_layer_epochs):
                t0 = time.perf_counter()
                row = self._train_pass(step, opt, cfg.seed * 100_003 + index + (e + 1) * 1_000_003,
                                       f"last layer {e + 1}/{cfg.last_layer_epochs}",
                                       lambda out, images, labels: last_layer_terms(model, out.logits, labels, cfg))
                rows.append({**row, "ll_epoch": e + 1, "seconds": round(time.perf_counter() - t0, 3)})
            rows[-1]["test_acc"] = self.test_accuracy()
            return rows
        train_d, train_y = self._min_distances(self.data.push, "cache similarities")
        rows = fit_last_layer(model, opt, log_similarity(train_d), train_y, cfg, cfg.last_layer_epochs,
                              generator=torch.Generator().manual_seed(cfg.seed),
                              test_accuracy=self.test_accuracy, rt=self.rt)
        lrs = lr_fields(opt.param_groups)
        return [{"epoch": step.epoch + 1, "stage": "last_layer", **row, **lrs} for row in rows]

    # -- persistence --------------------------------------------------------------------------
    def _save_snapshot(self) -> None:
        if self.run is None or not self.rt.is_main:
            return
        save_snapshot(self.run.snapshot_path, self.model, self.extra, self.optimizers, self.scaler, self.state,
                      self.data.classes)
        self.run.write_metrics(self.state.records)
        if self.logs is not None:
            self.logs.update(self.state.records)

    def _load_snapshot(self) -> None:
        assert self.run is not None
        snap, self._test_cache = read_snapshot(self.run.snapshot_path), None
        try:
            self.model.load_state_dict(snap.model)  # first: a pruned tree's parameters take new shapes
            if snap.extra:
                self.extra.load_state_dict(snap.extra)
            for name, state in snap.optimizers.items():  # bound to the loaded parameters
                opt = self.optimizer(name)
                if opt is None:
                    raise ValueError(f"optimizer '{name}' of the snapshot trains nothing here")
                opt.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()
            raise P2PError(f"{self.run.snapshot_path}: the snapshot does not fit this run's model "
                           f"({first[-1].strip() if first else type(exc).__name__})") from None
        if snap.scaler:
            self.scaler.load_state_dict(snap.scaler)
        self.state = snap.state

    def _finish(self) -> None:
        if self.run is None or not self.rt.is_main:
            return
        last = self.state.records[-1] if self.state.records else {}
        extra = dict(self.metadata)
        extra["test_acc"] = last.get("test_acc")
        atomic_write_json(self.run.prototypes_path, {"grid": self.state.grid, "image_size": self.cfg.image_size,
                                                     "prototypes": self.state.prototypes})
        self.run.write_metrics(self.state.records)
        if self.logs is not None:
            self.logs.update(self.state.records)
            self.logs.close()
        # the weights last: a run is finished once model.safetensors exists (RunDir.is_complete)
        save_model(self.run.model_path, self.model, stage="final", class_names=self.data.classes, extra=extra)
        write_model_card(self.run.path)
        self.run.snapshot_path.unlink(missing_ok=True)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols and k not in ("seconds", "stage") and not k.startswith("lr"):
                cols.append(k)
    return cols + ["seconds"]
