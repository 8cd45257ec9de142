"""Active patches and the two patch-overlap metrics of Proto2Proto (Keswani et al., CVPR 2022).

Every function works on the two arrays one evaluation pass gives per model
(:mod:`p2p_cli.metrics.arrays`): ``argmin`` ``(N, m)`` int, the flat grid location
``ℓ = h·W + w`` in ``[0, H·W)`` of the patch closest to each prototype, and ``min_dist``
``(N, m)`` float, that minimum squared-L2 distance. ``N`` is the number of images, ``m`` the
number of prototypes (teacher and student may differ after pruning) and
``num_locations = H·W``. Nothing here touches a model.

* **Active patch** (Eq. 1-2): location ℓ of image n is active if some prototype has its argmin
  at ℓ with minimum distance ``≤ τ`` (τ inclusive; ``τ = inf`` makes every argmin active).
* **AAP** (Eq. 7): mean over images of the number of distinct active locations.
* **AJS** (Eq. 8): mean over images of ``|A^T ∩ A^S| / |A^T ∪ A^S|``; an image where both
  sets are empty counts 1 (``fidelity="paper"``) or 0 (``"reference"``, the public code).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from p2p_cli.errors import P2PError
from p2p_cli.metrics.arrays import ROWS_ELEMS, as_argmin, as_dist, check_tau

__all__ = ["Fidelity", "aap", "active_mask", "ajs"]

Fidelity = Literal["paper", "reference"]


def active_mask(argmin: object, min_dist: object, tau: float, num_locations: int) -> np.ndarray:
    """Active-patch mask of every image (paper Eq. 1-2).

    Location ℓ of image n is active iff some prototype j has ``argmin[n, j] == ℓ`` and
    ``min_dist[n, j] <= tau``. ``tau = math.inf`` makes every argmin location active (the
    public code's ``dist_th=None``); a negative ``tau`` makes nothing active.

    Args:
        argmin: ``(N, m)`` int, flat argmin locations in ``[0, num_locations)``.
        min_dist: ``(N, m)`` float, the matching minimum squared-L2 distances.
        tau: distance threshold τ (inclusive), may be ``math.inf``.
        num_locations: ``H·W``.

    Returns:
        ``(N, num_locations)`` bool mask.
    """
    loc = as_argmin(argmin, num_locations, "argmin")
    dist = as_dist(min_dist, loc.shape, "min_dist")
    tau = check_tau(tau)
    n_img, m = loc.shape
    mask = np.zeros((n_img, num_locations), dtype=bool)
    every = math.isinf(tau) and tau > 0
    step = max(1, ROWS_ELEMS // m)  # bounded temporaries
    for n0 in range(0, n_img, step):
        n1 = min(n_img, n0 + step)
        rows = np.broadcast_to(np.arange(n0, n1)[:, None], (n1 - n0, m))
        if every:
            mask[rows, loc[n0:n1]] = True
        else:
            keep = dist[n0:n1].astype(np.float64) <= tau
            mask[rows[keep], loc[n0:n1][keep]] = True
    return mask


def aap(argmin: object, min_dist: object, tau: float, num_locations: int) -> float:
    """Average number of Active Patches, AAP(τ) (paper Eq. 7).

    ``AAP = (1/N) Σ_n |{ℓ : ℓ active in image n}|`` — distinct active locations, so two
    prototypes with their argmin at the same patch count once (as ``len(set(...))`` in the
    public code).

    Args:
        argmin: ``(N, m)`` int flat locations; min_dist: ``(N, m)`` float; tau: threshold
        (``math.inf`` allowed); num_locations: ``H·W``.

    Returns:
        A float in ``[0, min(m, H·W)]``.
    """
    mask = active_mask(argmin, min_dist, tau, num_locations)
    return float(mask.sum(dtype=np.int64) / mask.shape[0])


def ajs(
    argmin_t: object,
    dist_t: object,
    argmin_s: object,
    dist_s: object,
    tau: float,
    num_locations: int,
    fidelity: Fidelity = "paper",
) -> float:
    """Average Jaccard Similarity of active patches, AJS(τ) (paper Eq. 8).

    ``AJS = (1/N) Σ_n |A^T_n ∩ A^S_n| / |A^T_n ∪ A^S_n|`` with ``A_n`` the active locations of
    image n (Eq. 1-2). An image where *both* sets are empty has an undefined ratio:

    * ``fidelity="paper"`` counts it 1 (identical explanations), so ``AJS(T, T) = 1`` for every
      τ, as the paper states;
    * ``fidelity="reference"`` counts it 0, as the public code's ``jaccard_similarity_basic``
      does — at small τ this drags AJS(T, T) below 1.

    An image where exactly one set is empty scores 0 in both fidelities.

    Args:
        argmin_t, dist_t: teacher ``(N, mT)`` arrays; argmin_s, dist_s: student ``(N, mS)``
        arrays (same N, any mT, mS); tau: threshold (``math.inf`` allowed);
        num_locations: ``H·W`` (both models on the same grid); fidelity: see above.

    Returns:
        A float in ``[0, 1]``.
    """
    if fidelity not in ("paper", "reference"):
        raise P2PError(f"fidelity must be 'paper' or 'reference', got {fidelity!r}")
    mask_t = active_mask(argmin_t, dist_t, tau, num_locations)
    mask_s = active_mask(argmin_s, dist_s, tau, num_locations)
    if mask_t.shape[0] != mask_s.shape[0]:
        raise P2PError(
            f"teacher and student were evaluated on different numbers of images "
            f"({mask_t.shape[0]} vs {mask_s.shape[0]})"
        )
    inter = np.logical_and(mask_t, mask_s).sum(axis=1, dtype=np.int64)
    union = np.logical_or(mask_t, mask_s).sum(axis=1, dtype=np.int64)
    empty = union == 0
    per_image = inter / np.where(empty, 1, union)
    per_image[empty] = 1.0 if fidelity == "paper" else 0.0
    return float(per_image.mean())

