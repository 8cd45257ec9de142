"""The head-on-stomach experiment for one model (Hoffmann et al. 2021, §3 and App. F.1): clean
and adversarial accuracy, the attack on correctly classified test images, per-image records, the
figure rows and, for a teacher, the transfer to its students."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from p2p_cli.attacks.head_on_stomach import AttackSettings, StomachBatch, head_on_stomach
from p2p_cli.attacks.pgd import pgd_cross_entropy
from p2p_cli.attacks.pixels import to_pixels
from p2p_cli.attacks.regions import best_cell_box, region_box
from p2p_cli.attacks.testset import clean_predictions, image_loader, image_order
from p2p_cli.attacks.transfer import transfer
from p2p_cli.data.images import ImageDataset, load_image
from p2p_cli.data.index import DatasetIndex, Sample
from p2p_cli.errors import P2PError
from p2p_cli.models.maps import high_activation_box, upsampled_similarity
from p2p_cli.models.runs import LoadedRun
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.viz.robustness import FigureExample


def run_head_on_stomach(subject: LoadedRun, ds: ImageDataset, rt: Runtime, settings: AttackSettings,
                        reporter: Reporter, *, index: DatasetIndex | None = None,
                        students: Sequence[LoadedRun] = ()) -> dict[str, Any]:
    """The head-on-stomach experiment for one model; returns its JSON-ready report entry.

    The test images are drawn in a seeded order (:func:`~p2p_cli.attacks.testset.image_order`);
    the first ``settings.images`` that the model classifies correctly are attacked. Reported:
    success rate, clean accuracy (whole test set), adversarial accuracy (PGD-``adv_iters`` on the
    cross-entropy, over the first ``settings.images`` images of the same order, correct or not),
    the fraction of attacked images still classified correctly, the mean similarity shift
    (:attr:`~p2p_cli.attacks.head_on_stomach.StomachBatch.shift`), per-image records, and — with
    ``students`` — the transfer rates (:func:`~p2p_cli.attacks.transfer.transfer`).
    ``"_figures"`` holds :class:`~p2p_cli.viz.robustness.FigureExample` rows for the
    ``settings.figures`` successful attacks with the largest similarity shift.
    """
    t0 = time.perf_counter()
    model = subject.model
    with reporter.task(f"{subject.name}: clean accuracy", len(ds)) as advance:
        preds, labels = clean_predictions(model, ds, rt, settings.batch_size, settings.workers, advance)
    correct = preds == labels
    order = image_order(len(ds), settings.seed)
    chosen = [i for i in order if bool(correct[i])][: settings.images]
    gen = torch.Generator().manual_seed(settings.seed)
    noise_gen = torch.Generator().manual_seed(settings.seed + 1)  # the transfer view's random-noise control

    adv_correct = adv_seen = 0
    if settings.adv_iters > 0:
        adv_correct, adv_seen = _adversarial_accuracy(subject, ds, order[: settings.images], rt, settings, gen,
                                                      reporter)

    keys: list[int] = []
    labels_list, images_list = [], []
    for images, y, base in image_loader(ds, chosen, settings.batch_size, settings.workers):
        images_list.append(images)
        labels_list.append(y)
        keys.extend(int(b) for b in base)
    if not keys:
        raise P2PError(f"'{subject.name}' classifies no test image correctly: nothing to attack")
    clean = to_pixels(torch.cat(images_list).to(rt.device))
    y = torch.cat(labels_list).to(rt.device)
    with reporter.task(f"{subject.name}: head on stomach", len(chosen)) as advance:
        batch = head_on_stomach(model, clean, rt, settings, keys=keys, progress=advance)
    linf = float((batch.adv - clean).abs().max())
    records = [_record(batch, i, keys[i], y[i]) for i in range(len(keys))]
    shown = sorted((i for i in range(len(keys)) if batch.success[i]), key=lambda i: -float(batch.shift[i]))
    figures = [figure_example(subject, batch, i, clean, f"test #{keys[i]}", settings.eps, index)
               for i in sorted(shown[: settings.figures])]  # the successful attacks with the largest shift
    moved = None
    if students:
        with reporter.task(f"{subject.name}: transfer to {len(students)} model(s)", len(keys)) as advance:
            moved = transfer(model, {s.name: s.model for s in students}, clean, batch, rt, eps=settings.eps,
                             percentile=settings.percentile, batch_size=settings.batch_size, generator=noise_gen,
                             progress=advance)

    n = len(records)
    succ = [r for r in records if r["success"]]

    def mean(values: list[float]) -> float | None:
        finite = [v for v in values if math.isfinite(v)]
        return float(np.mean(finite)) if finite else None

    entry: dict[str, Any] = {
        "backbone": subject.model.config.backbone,
        "weights": subject.weights,
        "test_images": len(ds),
        "attacked": n,
        "correct_available": int(correct.sum()),
        "success_rate": len(succ) / n if n else None,
        "clean_acc": float(correct.float().mean()) if len(ds) else None,
        "adv_acc": adv_correct / adv_seen if adv_seen else None,
        "adv_acc_images": adv_seen,
        "still_correct": mean([float(r["still_correct"]) for r in records]),
        "success_still_correct": mean([float(r["success"] and r["still_correct"]) for r in records]),
        "shift": mean([r["shift"] for r in records]),
        "shift_success": mean([r["shift"] for r in succ]),
        "sim_clean": mean([r["sim_clean"] for r in records]),
        "sim_new": mean([r["sim_new"] for r in records]),
        "steps_success": mean([float(r["steps"]) for r in succ]),
        "success_rank": {str(k + 1): sum(r["rank"] == k + 1 for r in succ) for k in range(settings.top_k)},
        "linf": linf,
        "seconds": round(time.perf_counter() - t0, 2),
        "images": records,
        "_figures": figures,
    }
    if moved is not None:
        entry["transfer"] = moved
    return entry


def _adversarial_accuracy(subject: LoadedRun, ds: ImageDataset, indices: Sequence[int], rt: Runtime,
                          settings: AttackSettings, generator: torch.Generator, reporter: Reporter
                          ) -> tuple[int, int]:
    """(correct, seen) under PGD-``settings.adv_iters`` on the cross-entropy (Madry et al. 2018)."""
    adv_correct = adv_seen = 0
    with reporter.task(f"{subject.name}: PGD-{settings.adv_iters} accuracy", len(indices)) as advance:
        for images, y, _ in image_loader(ds, indices, settings.batch_size, settings.workers):
            pixels, y = to_pixels(images.to(rt.device)), y.to(rt.device)
            p = pgd_cross_entropy(subject.model, pixels, y, rt, eps=settings.eps, step=settings.step,
                                  iters=settings.adv_iters, generator=generator)
            adv_correct += int((p == y).sum())
            adv_seen += len(y)
            advance(len(y))
    return adv_correct, adv_seen


def _record(batch: StomachBatch, i: int, key: int, label: torch.Tensor) -> dict[str, Any]:
    """The JSON record of attacked image ``i`` (dataset index ``key``)."""
    return {
        "index": key, "label": int(label), "success": bool(batch.success[i]),
        "prototype": int(batch.prototype[i]), "rank": int(batch.rank[i]) + 1,
        "steps": int(batch.steps[i]), "attempts": int(batch.attempts[i]),
        "sim_clean": float(batch.sim_clean[i]), "sim_new": float(batch.sim_new[i]),
        "sim_inside_adv": float(batch.sim_inside_adv[i]),
        "sim_outside_clean": float(batch.sim_outside_clean[i]),
        "shift": float(batch.shift[i]), "still_correct": bool(batch.pred_adv[i] == label),
        "region_cells": int(batch.region[i].sum()),
    }


def _uint8_image(pixels: torch.Tensor) -> np.ndarray:
    """[0, 1] float (3, S, S) → uint8 (S, S, 3)."""
    return (pixels.detach().float().cpu().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()


def prototype_source(subject: LoadedRun, j: int, index: DatasetIndex | None
                     ) -> tuple[np.ndarray | None, list[int] | None]:
    """The pushed prototype's source image (uint8 (S, S, 3) at the model's input size) and its
    activation box, if ``prototypes.json`` records them and the training image is still there."""
    rec = subject.record(j)
    src = rec.get("source") if rec else None
    if not src or index is None:
        return None, None
    i = int(src.get("index", -1))
    sample: Sample | None = index.train[i] if 0 <= i < len(index.train) else None
    if sample is None or str(sample.path) != str(src.get("path")) or not Path(sample.path).is_file():
        return None, None
    image = load_image(sample, subject.image_size, bool(rec.get("crop_bbox", subject.crop_bbox)))  # type: ignore[union-attr]
    return image.permute(1, 2, 0).numpy(), rec.get("activation_box")  # type: ignore[union-attr]


def figure_example(subject: LoadedRun, batch: StomachBatch, i: int, clean: torch.Tensor, label: str,
                   eps: float, index: DatasetIndex | None) -> FigureExample:
    """The before/after figure row of attacked image ``i`` (clean: (N, 3, S, S) in [0, 1])."""
    size = clean.shape[-1]
    j = int(batch.prototype[i])
    source, source_box = prototype_source(subject, j, index)
    maps_clean, maps_adv = batch.maps_clean[i].cpu(), batch.maps_adv[i].cpu()
    return FigureExample(
        title=f"{label}, prototype {j} (rank {int(batch.rank[i]) + 1})",
        clean=_uint8_image(clean[i]), adv=_uint8_image(batch.adv[i]),
        heat_clean=upsampled_similarity(maps_clean, size).numpy(),
        heat_adv=upsampled_similarity(maps_adv, size).numpy(),
        box_clean=high_activation_box(maps_clean, size), box_adv=high_activation_box(maps_adv, size),
        region_box=region_box(batch.region[i], size), cell_adv=best_cell_box(maps_adv, size),
        perturbation=(batch.adv[i] - clean[i]).detach().cpu().permute(1, 2, 0).numpy(),
        eps=eps, sim_clean=float(batch.sim_clean[i]), sim_adv=float(batch.sim_new[i]),
        sim_inside_adv=float(batch.sim_inside_adv[i]),
        source=source, source_box=source_box)
