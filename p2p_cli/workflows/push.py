"""``p2p push-prototypes``: push a trained run's prototypes (the trainer's own
:func:`~p2p_cli.training.push.push_prototypes`), write ``prototypes.json`` and, optionally, images.

The push is ProtoPNet's prototype projection (Chen et al., NeurIPS 2019, §2.2): every prototype
p_j (D × 1 × 1) is replaced by its nearest (squared L2) add-on patch z (D, one cell of the
(H, W) grid) over the un-augmented training images of its class(es). ``prototypes.json``
records per prototype the source image, its grid cell, the distances before and after, the
receptive field of the cell and the 95th-percentile activation box (ProtoPNet §2.4), both in
input pixels.

Pushing a pushed model again moves nothing: every prototype already equals an add-on patch of
an own-class training image, so its distance to the nearest one is exactly 0. When the push
does move prototypes (another dataset, or a model never pushed), the weights change: that
needs ``--overwrite`` (update the run) or ``--name`` (write the pushed model as a new run).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from p2p_cli.data.images import ImageDataset
from p2p_cli.data.loaders import eval_loader, load_dataset_index
from p2p_cli.data.transforms import eval_transform
from p2p_cli.errors import P2PError
from p2p_cli.io.atomic import atomic_write_json
from p2p_cli.io.config import TrainConfig, with_overrides
from p2p_cli.io.rundir import RunDir, prepare_run
from p2p_cli.models.factory import save_model
from p2p_cli.models.maps import upsampled_similarity
from p2p_cli.models.protopnet import ProtoPNet
from p2p_cli.models.runs import load_run
from p2p_cli.runtime.device import Runtime, make_runtime
from p2p_cli.runtime.distributed import barrier
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.training.provenance import provenance_records, summarize
from p2p_cli.training.push import PushResult, push_prototypes
from p2p_cli.viz.prototypes import prototype_pngs, upscale
from p2p_cli.workflows.train_teacher import write_run_config

MOVED_TOL = 1e-8
"""A prototype counts as moved when its squared distance to its new patch exceeds this."""
IMAGE_LONG_SIDE = 224  # saved overlays: at least this many pixels on the longer side


@dataclass(frozen=True)
class PushRequest:
    """What ``p2p push-prototypes`` was asked (``None``: the run's own value)."""

    model: str
    workdir: Path
    save_images: bool = True
    dataset: str | None = None
    data_root: str | None = None
    name: str | None = None
    overwrite: bool = False
    batch_size: int | None = None
    workers: int | None = None
    device: str = "auto"
    precision: str | None = None  # default: the run's


@torch.no_grad()
def accuracy(model: ProtoPNet, ds: ImageDataset, cfg: TrainConfig, rt: Runtime, reporter: Reporter) -> float:
    """Test accuracy of ``model`` on ``ds`` (one eval pass)."""
    loader = eval_loader(ds, cfg.test_batch_size, cfg.workers, None)
    correct = seen = 0
    with reporter.task("test", len(ds)) as advance:
        for images, labels, _ in loader:
            with rt.autocast():
                feats = model.features(rt.images(images))
            logits = model.logits_from_min_distances(model.head(feats).min_distances)
            correct += int((logits.argmax(1).cpu() == labels).sum())
            seen += len(labels)
            advance(len(labels))
    return correct / max(seen, 1)


def push_run(req: PushRequest, reporter: Reporter) -> dict[str, Any]:
    """Push the prototypes of run ``req.model``; returns a summary (also what ``--json`` writes)."""
    t0 = time.perf_counter()
    loaded = load_run(req.model, req.workdir, provenance=False)  # prototypes.json is rewritten here
    run, model, meta = loaded.run, loaded.model, loaded.meta
    target = RunDir(Path(req.workdir) / req.name) if req.name else run
    if req.name and target.path.exists() and not req.overwrite:
        raise P2PError(f"run '{target.path}' already exists; pass --overwrite to replace it")
    if loaded.config is None:
        raise P2PError(f"{run.path} is not a p2p run (no config.yaml)")
    cfg = with_overrides(loaded.config, source=str(run.config_path), dataset=req.dataset, data_root=req.data_root,
                         test_batch_size=req.batch_size, workers=req.workers)
    rt = make_runtime(req.device, req.precision or cfg.precision, cfg.channels_last)
    index = load_dataset_index(cfg)
    loaded.check_classes(index)
    loaded.to(rt.device, channels_last=rt.channels_last, frozen=False)
    push_ds = ImageDataset(index.train, eval_transform(cfg.image_size), image_size=cfg.image_size,
                           crop_bbox=cfg.crop_bbox)
    loader = eval_loader(push_ds, cfg.test_batch_size, cfg.workers, rt)
    reporter.info(f"[bold]push-prototypes[/] {run.name}: {model.num_prototypes} prototypes over "
                  f"{len(push_ds)} training images at {cfg.image_size} px, device {rt.device}")
    t_push = time.perf_counter()
    with reporter.task("push", len(push_ds)) as advance:
        result = push_prototypes(model, loader, rt, progress=advance)
    push_seconds = time.perf_counter() - t_push
    records = provenance_records(result, index, model.class_identity.cpu(), cfg.image_size,
                                 crop_bbox=cfg.crop_bbox, model=model)
    before = result.distance_before[torch.isfinite(result.distance_before)]
    moved = int((before > MOVED_TOL).sum())
    stats = summarize(records)
    summary: dict[str, Any] = {
        "run": str(run.path), "target": str(target.path), "prototypes": model.num_prototypes,
        "moved": moved, "unpushed": stats["unpushed"],
        "max_distance_before": float(before.max()) if len(before) else None,
        "mean_distance_before": stats["mean_distance_before"],
        "distinct_source_images": stats["distinct_source_images"], "grid": list(result.grid),
        "push_seconds": round(push_seconds, 3),
    }
    if moved and target.path == run.path and not req.overwrite:
        raise P2PError(f"the push moved {moved} of {model.num_prototypes} prototypes of '{run.name}' (largest squared "
                       f"distance {summary['max_distance_before']:.4g}); pass --overwrite to update its weights, "
                       "or --name NEW to write the pushed model as a new run")
    if not rt.is_main:
        barrier(rt)  # return once rank 0 has written the result (a next command reads it)
        return summary
    if moved or target.path != run.path:
        test_ds = ImageDataset(index.test, eval_transform(cfg.image_size), image_size=cfg.image_size,
                               crop_bbox=cfg.crop_bbox)
        summary["test_acc"] = accuracy(model, test_ds, cfg, rt, reporter)
        extra = {k: v for k, v in meta.items() if k not in ("format", "arch", "stage", "p2p_version", "model_config",
                                                              "class_names", "num_prototypes")}
        extra.update(test_acc=summary["test_acc"], pushed_by="push-prototypes", pushed_from=str(run.path))
        if target.path != run.path:
            target = prepare_run(Path(req.workdir), str(req.name), overwrite=req.overwrite, resume=False)
            data = {k: v for k, v in loaded.config_raw.items() if k not in cfg.to_dict()}
            data.pop("schema_version", None)
            data.pop("p2p_version", None)
            data.pop("command", None)
            data.pop("argv", None)
            write_run_config(target, cfg, "push-prototypes", {**data, "pushed_from": str(run.path)})
            if run.metrics_path.is_file():
                shutil.copyfile(run.metrics_path, target.metrics_path)
        save_model(target.model_path, model, stage="final", class_names=index.classes, extra=extra)
    _keep_merge_records(records, run)
    atomic_write_json(target.prototypes_path, {"grid": list(result.grid), "image_size": cfg.image_size,
                                               "prototypes": records})
    if req.save_images:
        with reporter.task("prototype images", len(records)) as advance:
            summary["images"] = str(save_prototype_images(target.path / "prototypes", result, records, push_ds,
                                                          progress=advance))
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    barrier(rt)
    return summary


MERGE_KEYS = ("source_prototype", "merged_from", "original_prototypes")  # written by `p2p prune`


def _keep_merge_records(records: list[dict[str, Any]], run: RunDir) -> None:
    """Carry a pruned run's merge record (which source prototypes each one stands for) over to the new
    provenance records: a push changes where a prototype comes from, not what it was merged from."""
    if not run.prototypes_path.is_file():
        return
    try:
        old = json.loads(run.prototypes_path.read_text()).get("prototypes", [])
    except (OSError, ValueError, AttributeError):
        return
    if len(old) != len(records):
        return
    for rec, prev in zip(records, old, strict=True):
        rec.update({k: prev[k] for k in MERGE_KEYS if isinstance(prev, dict) and k in prev})


def save_prototype_images(folder: Path, result: PushResult, records: list[dict[str, Any]], ds: ImageDataset,
                          progress=None) -> Path:
    """Per pushed prototype j, three PNGs in ``folder`` (replaced as a whole), drawn by
    :func:`~p2p_cli.viz.prototypes.prototype_pngs`:

    * ``prototype-J-patch.png``: the source image's pixels inside the 95th-percentile box (input
      resolution);
    * ``prototype-J-box.png``: the source image with that box (cyan) and the receptive field of the
      source cell (dashed white; omitted when it covers the whole image);
    * ``prototype-J-heatmap.png``: the source image overlaid with the prototype's similarity map
      (its (H, W) distance map upsampled bicubically, colormap inferno).

    Overlays are drawn at ≥ 224 px on the longer side so that small inputs stay legible.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        width = max(3, len(str(max(len(records) - 1, 0))))
        loaded: dict[int, np.ndarray] = {}
        for j, rec in enumerate(records):
            src = rec.get("source")
            if src is not None:
                i = int(src["index"])
                if i not in loaded:
                    loaded[i] = ds.load(i).permute(1, 2, 0).numpy()
                image = loaded[i]
                s = image.shape[0] * upscale(image.shape[0], IMAGE_LONG_SIDE)
                up = upsampled_similarity(result.distance_maps[j], (s, s)).numpy()
                pngs = prototype_pngs(image, rec["activation_box"], rec.get("receptive_field_box"), up)
                for kind in ("patch", "box", "heatmap"):
                    (tmp / f"prototype-{j:0{width}d}-{kind}.png").write_bytes(pngs[kind])
            if progress is not None:
                progress()
        if folder.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            folder.rename(trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
