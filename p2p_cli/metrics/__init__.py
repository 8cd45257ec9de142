"""Metrics: accuracy, interpretability transfer (AAP, AJS, PMS) and part-based scores.

Pure functions over numpy arrays; nothing here imports models, data or the CLI.

* :mod:`~p2p_cli.metrics.classification` — accuracy, confusion, explanation size, sparsity;
* :mod:`~p2p_cli.metrics.active_patches` — active patches (Proto2Proto Eq. 1-2), AAP (Eq. 7),
  AJS (Eq. 8);
* :mod:`~p2p_cli.metrics.cooccurrence_gemm` and :mod:`~p2p_cli.metrics.prototype_matching` —
  PMS (Algorithm 1);
* :mod:`~p2p_cli.metrics.parts` — consistency and stability (Huang et al., ICCV 2023).
"""

from __future__ import annotations

from p2p_cli.metrics.active_patches import aap, active_mask, ajs
from p2p_cli.metrics.classification import (
    accuracy,
    confusion_matrix,
    explanation_size,
    explanation_sizes,
    last_layer_sparsity,
    per_class_accuracy,
    predictions,
)
from p2p_cli.metrics.cooccurrence_gemm import cooccurrence
from p2p_cli.metrics.parts import (
    HALF_SIDE_FRAC,
    argmax_pixel,
    consistency_score,
    part_coverage,
    prototype_consistency,
    stability,
    stability_score,
)
from p2p_cli.metrics.prototype_matching import PMSResult, pms, pms_from_cooccurrence, pms_thresholds

__all__ = [
    "HALF_SIDE_FRAC",
    "PMSResult",
    "aap",
    "accuracy",
    "active_mask",
    "ajs",
    "argmax_pixel",
    "confusion_matrix",
    "consistency_score",
    "cooccurrence",
    "explanation_size",
    "explanation_sizes",
    "last_layer_sparsity",
    "part_coverage",
    "per_class_accuracy",
    "pms",
    "pms_from_cooccurrence",
    "pms_thresholds",
    "predictions",
    "prototype_consistency",
    "stability",
    "stability_score",
]
