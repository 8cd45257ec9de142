"""Figures of the robustness experiments (Hoffmann et al., 2021).

* :func:`stomach_figure` — the head-on-stomach before/after rows, like the paper's Figure 1:
  the prototype's source image (cyan: its activation box), where the prototype is found in the
  clean test image (heat map, yellow 95th-percentile box), where it is found after the
  perturbation (yellow box, green: the best-matching cell, dashed white: S, the original best
  match's cells), and the perturbation δ itself (mid-grey = 0, saturated = ±ε).
* :func:`jpeg_histograms` — the JPEG experiment's per-image distributions (App. D.2): the top
  prototype's similarity on the clean vs the compressed image, Spearman's ρ of all prototype
  similarities, and the overlap of the top-k sets.

Inputs are plain arrays (:class:`FigureExample`, filled by the attacks); outputs are PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from p2p_cli.viz.render import PNG_OPTIONS, draw_box, overlay_heatmap

BOX_COLOR = (255, 230, 0)  # the 95th-percentile box (the paper's yellow rectangle)
S_COLOR = (255, 255, 255)  # S: the cells of the original best match (dashed)
CELL_COLOR = (60, 255, 60)  # the best-matching cell after the attack
SOURCE_COLOR = (0, 230, 255)


@dataclass
class FigureExample:
    """Arrays for one before/after figure row of :func:`stomach_figure`. Boxes are pixel
    ``[x0, y0, x1, y1]`` on the model's S × S input."""

    title: str
    clean: np.ndarray  # uint8 (S, S, 3)
    adv: np.ndarray  # uint8 (S, S, 3)
    heat_clean: np.ndarray  # float32 (S, S) upsampled similarity of the prototype on x
    heat_adv: np.ndarray  # float32 (S, S) on x + δ
    box_clean: list[int]  # 95th-percentile box on x
    box_adv: list[int]  # the same on x + δ
    region_box: list[int]  # pixel footprint of S (the cells of the original best match)
    cell_adv: list[int]  # pixel footprint of the best-matching cell on x + δ (outside S on success)
    perturbation: np.ndarray  # float32 (S, S, 3) δ in pixel units
    eps: float
    sim_clean: float  # max_S g(x)
    sim_adv: float  # max_{A∖S} g(x + δ)
    sim_inside_adv: float  # max_S g(x + δ)
    source: np.ndarray | None = None  # uint8 (S', S', 3): the prototype's source image
    source_box: list[int] | None = None  # its activation box


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(width, height), dpi=110)


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", pil_kwargs=PNG_OPTIONS)
    plt.close(fig)
    return buf.getvalue()


def perturbation_image(delta: np.ndarray, eps: float) -> np.ndarray:
    """δ (S, S, 3) in pixel units → uint8 (S, S, 3): 128 + 127·δ/ε (grey where δ = 0)."""
    scale = 127.0 / max(float(eps), 1e-12)
    return np.clip(128.0 + np.asarray(delta, dtype=np.float64) * scale, 0, 255).round().astype(np.uint8)


def _show(ax, image: np.ndarray, title: str) -> None:
    ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _zoom(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of an (h, w[, c]) array by an integer ``factor``."""
    if factor <= 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def _scaled(box: Sequence[float], factor: int) -> list[float]:
    return [float(v) * factor for v in box]


def stomach_figure(examples: Sequence[FigureExample], *, title: str) -> bytes:
    """One row per example (:class:`FigureExample`): source, before, after, δ.

    Inputs smaller than 200 px are enlarged (nearest neighbour) so that the boxes stay thin."""
    if not examples:
        raise ValueError("stomach_figure needs at least one example")
    rows = len(examples)
    plt, fig = _figure(4 * 2.1, rows * 2.35 + 0.4)
    fig.suptitle(title, fontsize=9)
    for r, ex in enumerate(examples):
        f = max(1, -(-200 // ex.clean.shape[0]))
        axes = [fig.add_subplot(rows, 4, 4 * r + c + 1) for c in range(4)]
        if ex.source is not None:
            fs = max(1, -(-200 // ex.source.shape[0]))
            src = _zoom(ex.source, fs)
            if ex.source_box is not None:
                src = draw_box(src, _scaled(ex.source_box, fs), SOURCE_COLOR, width=2)
            _show(axes[0], src, f"{ex.title}\nprototype source")
        else:
            _show(axes[0], np.full_like(ex.clean, 235), f"{ex.title}\nprototype source")
            axes[0].text(0.5, 0.5, "not available", ha="center", va="center", fontsize=8,
                         transform=axes[0].transAxes)
        before = overlay_heatmap(_zoom(ex.clean, f), _zoom(ex.heat_clean, f))
        before = draw_box(before, _scaled(ex.box_clean, f), BOX_COLOR, width=2)
        after = overlay_heatmap(_zoom(ex.adv, f), _zoom(ex.heat_adv, f))
        after = draw_box(after, _scaled(ex.box_adv, f), BOX_COLOR, width=2)
        after = draw_box(after, _scaled(ex.region_box, f), S_COLOR, width=2, dashed=True)
        after = draw_box(after, _scaled(ex.cell_adv, f), CELL_COLOR, width=3)
        _show(axes[1], before, f"clean: best match {ex.sim_clean:.2f}")
        _show(axes[2], after, f"perturbed: {ex.sim_adv:.2f} outside S\nvs {ex.sim_inside_adv:.2f} in S (dashed)")
        delta = draw_box(_zoom(perturbation_image(ex.perturbation, ex.eps), f), _scaled(ex.region_box, f), S_COLOR,
                         width=2, dashed=True)
        _show(axes[3], delta, f"δ (grey 0, saturated ±{ex.eps * 255:.3g}/255)")
    fig.tight_layout()
    return _png(plt, fig)


def jpeg_histograms(arrays: Mapping[str, np.ndarray], *, name: str, quality: int, top_k: int) -> bytes:
    """Three histograms of per-image JPEG measures (arrays from ``jpeg_statistics``)."""
    plt, fig = _figure(12, 3.3)
    fig.suptitle(f"{name}: clean vs JPEG (quality {quality}), {len(arrays['rho'])} test images", fontsize=10)
    ax1, ax2, ax3 = (fig.add_subplot(1, 3, i) for i in (1, 2, 3))
    clean = np.asarray(arrays["top_sim_clean"], dtype=np.float64)
    jpeg = np.asarray(arrays["top_sim_jpeg"], dtype=np.float64)
    finite = np.concatenate([clean[np.isfinite(clean)], jpeg[np.isfinite(jpeg)]])
    bins = np.linspace(finite.min(), finite.max(), 31) if finite.size and finite.max() > finite.min() else 30
    ax1.hist(clean[np.isfinite(clean)], bins=bins, alpha=0.6, label="clean", color="#1f77b4")
    ax1.hist(jpeg[np.isfinite(jpeg)], bins=bins, alpha=0.6, label="JPEG", color="#d62728")
    ax1.set_title("similarity of the clean image's top prototype", fontsize=9)
    ax1.set_xlabel("similarity log((d+1)/(d+ε))")
    ax1.legend(fontsize=8)
    rho = np.asarray(arrays["rho"], dtype=np.float64)
    rho = rho[np.isfinite(rho)]
    lo = min(0.5, float(np.floor(rho.min() * 20) / 20)) if rho.size else -1.0
    ax2.hist(rho, bins=np.linspace(lo, 1, 41), color="#2ca02c")
    ax2.set_title("Spearman ρ of all prototype similarities", fontsize=9)
    ax2.set_xlabel("ρ (clean vs JPEG)")
    overlap = np.asarray(arrays["topk_overlap"], dtype=np.float64)
    k = max(1, int(top_k))
    edges = (np.arange(k + 2) - 0.5) / k
    ax3.hist(overlap, bins=edges, color="#9467bd", rwidth=0.85)
    ax3.set_title(f"overlap of the top-{k} prototype sets", fontsize=9)
    ax3.set_xlabel("|top-k(clean) ∩ top-k(JPEG)| / k")
    for ax in (ax1, ax2, ax3):
        ax.set_ylabel("images")
    fig.tight_layout()
    return _png(plt, fig)
