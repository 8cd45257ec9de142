"""Validation of the per-image arrays one evaluation pass gives (shared by AAP/AJS and PMS).

* ``argmin`` — ``(N, m)`` integer: for image ``n`` and prototype ``j`` the flat grid location
  ``ℓ = h·W + w`` in ``[0, H·W)`` of the patch closest to the prototype;
* ``min_dist`` — ``(N, m)`` float: that minimum squared-L2 distance.

Every problem with them is a one-line :class:`~p2p_cli.errors.P2PError`.
"""

from __future__ import annotations

import math

import numpy as np

from p2p_cli.errors import P2PError

__all__ = ["ROWS_ELEMS", "as_argmin", "as_dist", "check_tau"]

ROWS_ELEMS = 1 << 21
"""Elements per block when an ``O(N·m)`` temporary is needed (bounded extra memory)."""


def as_argmin(argmin: object, num_locations: int, name: str) -> np.ndarray:
    """Validate an ``(N, m)`` integer location array with values in ``[0, num_locations)``."""
    arr = np.asarray(argmin)
    if arr.ndim != 2:
        raise P2PError(f"{name} must have shape (N images, m prototypes), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise P2PError(f"{name} must hold integer grid locations, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.int64)
    if arr.shape[0] < 1:
        raise P2PError(f"{name} holds no images (N = 0): nothing to evaluate")
    if arr.shape[1] < 1:
        raise P2PError(f"{name} holds no prototypes (m = 0)")
    if num_locations < 1:
        raise P2PError(f"num_locations must be >= 1, got {num_locations}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= num_locations:
        raise P2PError(
            f"{name} holds grid locations in [{lo}, {hi}] but the grid has {num_locations} "
            f"locations (valid: 0..{num_locations - 1})"
        )
    return arr


def as_dist(min_dist: object, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Validate an ``(N, m)`` float distance array matching ``shape``; NaN is an error.

    The dtype is kept (float32 stays float32: no O(N·m) float64 copy); comparisons with τ
    are done in float64 chunk by chunk, as the public code compares Python floats.
    """
    arr = np.asarray(min_dist)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if arr.shape != shape:
        raise P2PError(f"{name} has shape {arr.shape}, expected {shape} (same as its argmin array)")
    if np.isnan(arr).any():
        raise P2PError(f"{name} contains NaN distances (the model's forward pass is broken)")
    return arr


def check_tau(tau: float) -> float:
    tau = float(tau)
    if math.isnan(tau):
        raise P2PError("tau must be a number or inf, got NaN")
    return tau

