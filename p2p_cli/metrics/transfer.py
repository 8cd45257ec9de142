"""Old home of the interpretability-transfer metrics, now split by concern:
:mod:`p2p_cli.metrics.active_patches` (active patches, AAP, AJS),
:mod:`p2p_cli.metrics.cooccurrence_gemm` (the co-occurrence matrix) and
:mod:`p2p_cli.metrics.prototype_matching` (PMS)."""

from __future__ import annotations

from p2p_cli.metrics.active_patches import aap, active_mask, ajs  # re-export: remove after merge
from p2p_cli.metrics.cooccurrence_gemm import cooccurrence  # re-export: remove after merge
from p2p_cli.metrics.prototype_matching import (  # re-export: remove after merge
    PMSResult,
    pms,
    pms_from_cooccurrence,
    pms_thresholds,
)

__all__ = [
    "PMSResult",
    "aap",
    "active_mask",
    "ajs",
    "cooccurrence",
    "pms",
    "pms_from_cooccurrence",
    "pms_thresholds",
]
