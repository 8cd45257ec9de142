"""Training curves from ``metrics.jsonl`` records: loss terms and accuracy per epoch."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from p2p_cli.viz.render import PNG_OPTIONS  # noqa: E402

LOSS_TERMS = ("total", "ce", "clst", "sep", "ppc", "global", "hint", "rkd_distance", "rkd_angle", "kd")


def epoch_series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of ``key`` over the warm/joint epoch records (push/last-layer rows skipped)."""
    xs, ys = [], []
    for r in records:
        if r.get("stage") in ("warm", "joint") and isinstance(r.get(key), (int, float)):
            xs.append(int(r["epoch"]))
            ys.append(float(r[key]))
    return xs, ys


def final_accuracy(records: Sequence[Mapping[str, Any]]) -> float | None:
    """Test accuracy of the last record (the pushed, last-layer-tuned model)."""
    for r in reversed(records):
        if isinstance(r.get("test_acc"), (int, float)):
            return float(r["test_acc"])
    return None


def plot_training_curves(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> bytes:
    """One PNG: per run, its loss terms (left, log scale) and train/test accuracy (right) per epoch;
    the final (pushed) test accuracy is marked at the last epoch."""
    n = max(1, len(runs))
    fig, axes = plt.subplots(n, 2, figsize=(11, 2.8 * n), squeeze=False, constrained_layout=True)
    for row, (name, records) in enumerate(runs.items()):
        loss_ax, acc_ax = axes[row]
        for term in LOSS_TERMS:
            xs, ys = epoch_series(records, term)
            if xs and any(y > 0 for y in ys):
                loss_ax.plot(xs, [max(y, 1e-6) for y in ys], marker=".", label=term)
        loss_ax.set_yscale("log")
        loss_ax.set_title(f"{name}: loss terms")
        loss_ax.set_xlabel("epoch")
        loss_ax.legend(fontsize=7, ncol=2)
        for key, style in (("train_acc", "--"), ("test_acc", "-")):
            xs, ys = epoch_series(records, key)
            if xs:
                acc_ax.plot(xs, ys, style, marker=".", label=key.replace("_", " "))
        final = final_accuracy(records)
        xs, _ = epoch_series(records, "test_acc")
        if final is not None and xs:
            acc_ax.plot([xs[-1]], [final], "k*", markersize=10, label="after push + last layer")
        acc_ax.set_ylim(0, 1)
        acc_ax.set_title(f"{name}: accuracy")
        acc_ax.set_xlabel("epoch")
        acc_ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, pil_kwargs=PNG_OPTIONS)
    plt.close(fig)
    return buf.getvalue()
