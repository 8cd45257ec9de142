"""The JPEG experiment (Hoffmann et al. 2021, §4 and App. D.2): per test image, the
similarities of all prototypes on the clean image and on its JPEG-compressed copy (quality 20):
the top prototype's similarity on both, Spearman's rank correlation of all m similarities, and
whether the top-k set changes."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from p2p_cli.attacks.pixels import forward_pixels, to_pixels
from p2p_cli.attacks.testset import check_sizes, image_loader, image_order
from p2p_cli.data.images import ImageDataset
from p2p_cli.data.transforms import JPEG_QUALITY, jpeg_compress
from p2p_cli.errors import P2PError
from p2p_cli.models.protopnet import ProtoPNet, log_similarity
from p2p_cli.models.runs import LoadedRun
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.reporter import Reporter


@dataclass(frozen=True)
class JpegSettings:
    """Settings of the JPEG experiment (defaults: the paper's App. D.2)."""

    quality: int = JPEG_QUALITY
    top_k: int = 5
    images: int | None = None  # None: every test image
    batch_size: int = 32
    workers: int = 0
    seed: int = 0

    def check(self) -> None:
        if not 1 <= self.quality <= 100:
            raise P2PError(f"--quality is a JPEG quality in [1, 100], got {self.quality}")
        check_sizes(self.top_k, self.images, self.batch_size, self.seed)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's ρ between matching rows of a and b (N, m) (average ranks for ties); NaN for a constant row."""
    from scipy.stats import rankdata

    ra = rankdata(a, axis=1)
    rb = rankdata(b, axis=1)
    ra = ra - ra.mean(axis=1, keepdims=True)
    rb = rb - rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(1) / np.where(denom > 0, denom, 1.0), np.nan)


@torch.no_grad()
def jpeg_batch(model: ProtoPNet, images: torch.Tensor, rt: Runtime, quality: int) -> dict[str, torch.Tensor]:
    """Clean vs JPEG for uint8 images (B, 3, S, S): similarities (B, m), predictions (B,) and the
    arg-min cell (B, m) of every prototype on both versions (keys ``*_clean`` / ``*_jpeg``)."""
    out: dict[str, torch.Tensor] = {}
    for key, batch in (("clean", images), ("jpeg", jpeg_compress(images.cpu(), quality).to(rt.device))):
        o = forward_pixels(model, to_pixels(batch.to(rt.device)), rt)
        out[f"sims_{key}"] = log_similarity(o.min_distances.float()).cpu()
        out[f"pred_{key}"] = o.logits.argmax(1).cpu()
        out[f"loc_{key}"] = o.distances.flatten(2).argmin(2).cpu()
    return out


def jpeg_statistics(sims_clean: np.ndarray, sims_jpeg: np.ndarray, loc_clean: np.ndarray, loc_jpeg: np.ndarray,
                    top_k: int) -> dict[str, np.ndarray]:
    """Per-image JPEG measures from similarities (N, m) and arg-min cells (N, m) of both versions.

    ``top_clean`` (the clean image's most similar prototype), its similarity on both versions
    (``top_sim_clean``, ``top_sim_jpeg``), the same for the JPEG image's top prototype
    (``jtop_sim_jpeg``, ``jtop_sim_clean``; the paper's direction, App. D.2), Spearman ``rho``
    of all m similarities, ``top1_changed``, ``topk_changed`` (the top-k sets differ),
    ``topk_overlap`` (|∩| / k), and ``location_moved`` (the top prototype's best-match cell).
    Every array has N entries.
    """
    n, m = sims_clean.shape
    k = min(top_k, m)
    rows = np.arange(n)
    top_c = sims_clean.argmax(1)
    top_j = sims_jpeg.argmax(1)
    set_c = np.sort(np.argsort(-sims_clean, axis=1, kind="stable")[:, :k], axis=1)
    set_j = np.sort(np.argsort(-sims_jpeg, axis=1, kind="stable")[:, :k], axis=1)
    overlap = np.array([len(np.intersect1d(set_c[i], set_j[i])) for i in range(n)], dtype=np.float64) / k
    return {
        "top_clean": top_c,
        "top_sim_clean": sims_clean[rows, top_c],
        "top_sim_jpeg": sims_jpeg[rows, top_c],
        "jtop_sim_jpeg": sims_jpeg[rows, top_j],
        "jtop_sim_clean": sims_clean[rows, top_j],
        "rho": spearman_rows(sims_clean, sims_jpeg),
        "top1_changed": top_c != top_j,
        "topk_changed": (set_c != set_j).any(1),
        "topk_overlap": overlap,
        "location_moved": loc_clean[rows, top_c] != loc_jpeg[rows, top_c],
    }


def run_jpeg(subject: LoadedRun, ds: ImageDataset, rt: Runtime, settings: JpegSettings,
             reporter: Reporter) -> dict[str, Any]:
    """The JPEG experiment for one model; returns its JSON-ready report entry.

    Images: every test image, or the first ``settings.images`` of the seeded order. Summary:
    accuracy on both versions, mean top-prototype similarity on both, mean/median ρ, the fractions
    with a changed top-1 / top-k / best-match location, mean top-k overlap; ``"_arrays"`` holds
    the per-image arrays for the histograms.
    """
    t0 = time.perf_counter()
    indices = list(range(len(ds))) if settings.images is None else image_order(len(ds), settings.seed)[
        : settings.images]
    parts: dict[str, list[torch.Tensor]] = {}
    labels: list[torch.Tensor] = []
    with reporter.task(f"{subject.name}: JPEG q{settings.quality}", len(indices)) as advance:
        for images, y, _ in image_loader(ds, indices, settings.batch_size, settings.workers):
            for key, v in jpeg_batch(subject.model, images.to(rt.device), rt, settings.quality).items():
                parts.setdefault(key, []).append(v)
            labels.append(y)
            advance(len(y))
    cat = {k: torch.cat(v).numpy() for k, v in parts.items()}
    y = torch.cat(labels).numpy()
    stats = jpeg_statistics(cat["sims_clean"], cat["sims_jpeg"], cat["loc_clean"], cat["loc_jpeg"], settings.top_k)

    def fmean(a: np.ndarray) -> float | None:
        a = np.asarray(a, dtype=np.float64)
        a = a[np.isfinite(a)]
        return float(a.mean()) if a.size else None

    rho = stats["rho"]
    return {
        "backbone": subject.model.config.backbone,
        "weights": subject.weights,
        "images": len(y),
        "acc_clean": fmean(cat["pred_clean"] == y),
        "acc_jpeg": fmean(cat["pred_jpeg"] == y),
        "top_sim_clean": fmean(stats["top_sim_clean"]),
        "top_sim_jpeg": fmean(stats["top_sim_jpeg"]),
        "top_sim_drop": fmean(stats["top_sim_clean"] - stats["top_sim_jpeg"]),
        "jtop_sim_jpeg": fmean(stats["jtop_sim_jpeg"]),
        "jtop_sim_clean": fmean(stats["jtop_sim_clean"]),
        "rho_mean": fmean(rho),
        "rho_median": float(np.nanmedian(rho)) if np.isfinite(rho).any() else None,
        "top1_changed": fmean(stats["top1_changed"]),
        "topk_changed": fmean(stats["topk_changed"]),
        "topk_overlap": fmean(stats["topk_overlap"]),
        "location_moved": fmean(stats["location_moved"]),
        "per_image": {
            "index": [int(i) for i in indices],
            "label": y.tolist(),
            "top_prototype": stats["top_clean"].tolist(),
            "top_sim_clean": stats["top_sim_clean"].tolist(),
            "top_sim_jpeg": stats["top_sim_jpeg"].tolist(),
            "rho": [None if not math.isfinite(v) else float(v) for v in rho],
            "topk_changed": stats["topk_changed"].tolist(),
        },
        "seconds": round(time.perf_counter() - t0, 2),
        "_arrays": stats,
    }
