"""prune: ProtoPShare merge-pruning or ProtoPNet k-NN pruning of a trained run, into a new run.

Orchestration only (the algorithms are in :mod:`p2p_cli.pruning`): load the source run, apply
the command-line overrides to its config, prune, and write the new run — its config records the
source and the pruning, and its ``prototypes.json`` says which source prototypes each survivor
absorbed. The source run is never modified.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import torch

from p2p_cli.data.loaders import build_datasets
from p2p_cli.errors import P2PError
from p2p_cli.io.atomic import atomic_write_json
from p2p_cli.io.config import with_overrides
from p2p_cli.io.metrics_log import METRICS_CSV, write_metrics_csv
from p2p_cli.io.model_card import write_model_card
from p2p_cli.io.rundir import RunDir
from p2p_cli.models.factory import save_model
from p2p_cli.models.runs import load_run
from p2p_cli.pruning.loop import PruneOptions, PruneResult, prune_model, round_size, validate
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.distributed import barrier
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.runtime.seeding import seed_everything, set_deterministic
from p2p_cli.workflows.runs import open_run, training_adversary, write_environment, write_run_config

__all__ = ["PruneOptions", "PruneResult", "prune", "prototype_records", "summarize"]

# metadata keys save_model writes itself; everything else of the source's metadata is carried over
_OWN_META = {"format", "arch", "stage", "p2p_version", "model_config", "class_names", "num_prototypes", "test_acc",
             "pruning"}


def prune(ref: str, *, workdir: Path, name: str | None, opts: PruneOptions, rt: Runtime, reporter: Reporter,
          overwrite: bool = False, data_root: str | None = None, seed: int | None = None
          ) -> tuple[RunDir, dict[str, Any]]:
    """Prune run ``ref`` into a new run ``workdir/name`` (default ``<source>-pruned``)."""
    t0 = time.perf_counter()
    loaded = load_run(ref, workdir)
    source, model, meta = loaded.run, loaded.model, loaded.meta
    if not callable(getattr(model, "merge_prototypes", None)):
        raise P2PError(f"'{source.name}' is a {loaded.arch}: p2p prune merges ProtoPNet prototypes; a "
                       "ProtoTree is pruned at the end of its training (prune_threshold)")
    if loaded.config is None:
        raise P2PError(f"{source.path} is not a p2p run (no config.yaml)")
    src_cfg = loaded.config_raw
    validate(opts, model.num_prototypes)
    cfg = with_overrides(loaded.config, source=str(source.config_path), data_root=data_root, seed=seed)
    name = name or f"{source.name}-pruned"
    if (Path(workdir) / name).resolve() == source.path.resolve():
        raise P2PError(f"--name {name!r} is the source run; pruning never modifies its source")
    if (Path(workdir) / name).exists() and not overwrite:  # fail before the work, not after it
        raise P2PError(f"run '{Path(workdir) / name}' already exists; pass --overwrite to replace it")
    source_hash = loaded.weights
    set_deterministic(cfg.deterministic)
    seed_everything(cfg.seed)
    data = build_datasets(cfg)
    loaded.check_classes(data.index, hint="pass the run's dataset with --data-root")
    loaded.to(rt.device, channels_last=rt.channels_last, frozen=False)
    reporter.info(f"[bold]prune[/] {source.name} → {name}: {opts.method}, {model.num_prototypes} prototypes"
                  + (f" → {opts.target}" if opts.target else "") + f", device {rt.device}")
    result = prune_model(model, data, cfg, opts, rt, reporter, adversary=training_adversary(cfg, rt))
    run = open_run(workdir, name, rt, overwrite=overwrite, resume=False)  # created only once there is a result
    record = {"source": {"name": source.name, "path": str(source.path.resolve()), "weights_hash": source_hash},
              "method": opts.method, "target": opts.target if opts.method == "protopshare" else None,
              "distance": opts.distance if opts.method == "protopshare" else None,
              "step": round_size(opts, model.num_prototypes), "fine_tune_epochs": cfg.last_layer_epochs
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
        write_environment(run, rt)
        extra = {k: v for k, v in meta.items() if k not in _OWN_META}
        extra.update(test_acc=result.test_acc_after, pruning=record)
        save_model(run.model_path, result.model, stage="final", class_names=data.classes, extra=extra)
        atomic_write_json(run.prototypes_path, prototype_records(source, result, data.classes))
        run.write_metrics(result.rounds)
        write_metrics_csv(run.path / METRICS_CSV, result.rounds)
        write_model_card(run.path)
    barrier(rt)  # every rank returns once rank 0 has written the pruned run
    summary = summarize(result, source, run, data.classes, model.class_identity, opts)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return run, summary


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
