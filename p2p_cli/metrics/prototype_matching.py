"""Prototype Matching Score, PMS (Proto2Proto, Keswani et al. CVPR 2022, Algorithm 1 and §4).

PMS compares where a teacher's and a student's prototypes point, image by image: from the
co-occurrence matrix ``I`` ``(mT, mS)`` of their ``(N, mT)`` / ``(N, mS)`` argmin locations
(:mod:`p2p_cli.metrics.cooccurrence_gemm`), the public code's modified Jaccard similarity
``S_k = min(I / m_k, 1)`` for each cap ``m_k`` (:func:`pms_thresholds`), a Hungarian matching
of ``min(mT, mS)`` prototype pairs per cap, and the mean matched similarity over the caps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from p2p_cli.errors import P2PError
from p2p_cli.metrics.cooccurrence_gemm import Backend, cooccurrence

__all__ = ["PMSResult", "pms", "pms_from_cooccurrence", "pms_thresholds"]


def pms_thresholds(n_images: int) -> list[int]:
    """The union caps ``m_k`` of the modified Jaccard similarity, for ``N = n_images``.

    ``s = max(1, ⌊N/10⌋)`` and ``m_k = k·s`` for every ``k ≥ 1`` with ``m_k < N`` — exactly the
    public code's ``range(int(0.1·N), N, int(0.1·N))`` for ``N ≥ 10`` (for ``N ≥ 100``: 9
    values when 10 divides N, else 10; e.g. N = 8041 gives 804, 1608, …, 8040). For
    ``10 ≤ N < 100`` there can be more (N = 19: 1..18). Tiny N, where the code's ``range``
    has step 0 and crashes:

    * ``2 ≤ N < 20``: ``s = 1``, so ``m_k = 1, 2, …, N − 1``;
    * ``N = 1``: the rule gives no cap at all; we use the single cap ``m = N = 1``, the natural
      limit (``S = I/N``: the fraction of images where both prototypes point at the same
      location, which is 0 or 1 here).

    Returns:
        Increasing list of positive ints.
    """
    n_images = int(n_images)
    if n_images < 1:
        raise P2PError("PMS needs at least one image")
    step = max(1, n_images // 10)
    caps = list(range(step, n_images, step))
    return caps if caps else [n_images]


@dataclass
class PMSResult:
    """Outcome of :func:`pms`.

    Attributes:
        score: PMS in ``[0, 1]``: mean over k of ``per_k``.
        per_k: mean matched similarity for each cap ``m_k`` (same order as ``m_values``).
        m_values: the caps ``m_k`` (:func:`pms_thresholds`).
        row_ind, col_ind: the Hungarian matching at the **largest** cap ``m_values[-1]`` (the
            least clipped similarity, i.e. ranked by raw co-occurrence counts): teacher
            prototype ``row_ind[r]`` ↔ student prototype ``col_ind[r]``; ``row_ind`` increasing.
        num_matched: ``min(mT, mS)`` — with unequal prototype counts only that many pairs are
            matched and averaged; the surplus prototypes of the larger model are ignored.
        num_teacher, num_student: ``mT`` and ``mS``.
        num_solves: Hungarian problems actually solved (≤ ``len(m_values)``; see :func:`pms`).
        cooccurrence: the ``(mT, mS)`` int32 matrix I when requested, else None.
        timings: seconds spent in ``"cooccurrence"`` and ``"matching"``.
    """

    score: float
    per_k: list[float]
    m_values: list[int]
    row_ind: np.ndarray
    col_ind: np.ndarray
    num_matched: int
    num_teacher: int
    num_student: int
    num_solves: int
    cooccurrence: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)


def pms_from_cooccurrence(counts: np.ndarray, n_images: int, return_cooccurrence: bool = False) -> PMSResult:
    """PMS from a precomputed co-occurrence matrix ``counts`` (``(mT, mS)``, ints ≤ ``n_images``).

    See :func:`pms` for the definition. Useful when I is cached by the evaluation pass.
    """
    counts = np.asarray(counts)
    if counts.ndim != 2 or min(counts.shape) < 1:
        raise P2PError(f"co-occurrence matrix must be (mT, mS) with mT, mS >= 1, got {counts.shape}")
    m_values = pms_thresholds(n_images)
    m_t, m_s = counts.shape
    n_match = min(m_t, m_s)
    counts64 = counts.astype(np.int64, copy=False)
    if counts64.size and (counts64.min() < 0 or counts64.max() > n_images):
        raise P2PError(f"co-occurrence counts must lie in [0, N = {n_images}]")
    top = int(counts64.max())
    t0 = time.perf_counter()
    per_k: list[float] = [0.0] * len(m_values)
    rows = cols = np.empty(0, dtype=np.int64)
    best_rows = best_cols = rows
    num_solves = 0
    have = False
    # Largest cap first. A matching M optimal for min(I, c) stays optimal for min(I, c') for
    # every c' <= c with max(I[M]) <= c': its value is unchanged (no matched entry is clipped)
    # and clipping further can only lower every other matching's value.
    for idx in range(len(m_values) - 1, -1, -1):
        cap = m_values[idx]
        if not (have and int(counts64[rows, cols].max()) <= cap):
            clipped = np.minimum(counts64, cap) if cap < top else counts64
            rows, cols = linear_sum_assignment(clipped.astype(np.float64), maximize=True)
            num_solves += 1
            have = True
        if idx == len(m_values) - 1:
            best_rows, best_cols = rows, cols
        matched = int(np.minimum(counts64[rows, cols], cap).sum())
        per_k[idx] = matched / (cap * n_match)
    elapsed = time.perf_counter() - t0
    return PMSResult(
        score=float(sum(per_k) / len(per_k)),
        per_k=per_k,
        m_values=m_values,
        row_ind=np.asarray(best_rows, dtype=np.int64),
        col_ind=np.asarray(best_cols, dtype=np.int64),
        num_matched=n_match,
        num_teacher=m_t,
        num_student=m_s,
        num_solves=num_solves,
        cooccurrence=counts if return_cooccurrence else None,
        timings={"matching": elapsed},
    )


def pms(
    argmin_t: object,
    argmin_s: object,
    num_locations: int,
    return_cooccurrence: bool = False,
    backend: Backend = "auto",
) -> PMSResult:
    """Prototype Matching Score (Proto2Proto, Keswani et al. CVPR 2022, Algorithm 1 and §4).

    Algorithm 1 gives each prototype the set ``q_j = {UNIQUE-ID(ℓ_j(n), n) : n = 1..N}`` (one
    element per image) and compares sets with the public code's *modified Jaccard*
    ``sim = |q^T ∩ q^S| / min(|q^T ∪ q^S|, m_k)``, clipped to 1 once the intersection reaches
    ``m_k``, averaged over the caps ``m_k`` of :func:`pms_thresholds`. With
    ``I_ij = |q_i^T ∩ q_j^S|`` = #images where ``ℓ_i^T = ℓ_j^S`` the union is ``2N − I ≥ N > m_k``,
    so ``sim = S_k = min(I / m_k, 1)``. For each k, the Hungarian algorithm
    (``scipy.optimize.linear_sum_assignment``, maximising) matches ``min(mT, mS)`` pairs;

        ``PMS = (1/K) Σ_k (1/min(mT, mS)) Σ_{(i,j) matched at k} S_k[i, j]``.

    ``PMS(T, T) = 1`` (the identity matching has ``I_ii = N > m_k``).

    **Exactness.** I is computed as a sum of one-hot products chunked over images. Every
    operand entry is 0 or 1 and every partial sum of a dot product is an integer between 0 and
    the chunk's image count: int8 × int8 → int32 is exact; in the bf16 backend chunks hold
    ≤ 256 images, and every integer in [0, 256] is exact in bfloat16 and float32, so no
    rounding can occur whatever the kernel's accumulation order or precision; fp32 is exact
    below 2^24. Chunk results are summed in int32. A row/column-sum check (O(N·m), exact
    integers) verifies the result. Each matching is solved on the integer matrix
    ``min(I, m_k)`` (``S_k`` times the positive constant ``m_k``: same optimal matchings), and
    ``S_k``'s matched sum is one division of two exact integers. Solves are reused across k
    only when provably optimal (see :func:`pms_from_cooccurrence`), so the score is the
    exact optimum, independent of tie-breaking.

    Args:
        argmin_t: teacher ``(N, mT)`` int flat argmin locations.
        argmin_s: student ``(N, mS)`` int flat argmin locations (same N; mS may differ).
        num_locations: ``H·W``.
        return_cooccurrence: keep I in the result (for the matched-prototype gallery).
        backend: co-occurrence backend (:func:`~p2p_cli.metrics.cooccurrence_gemm.cooccurrence`).

    Returns:
        :class:`PMSResult`.
    """
    t0 = time.perf_counter()
    counts = cooccurrence(argmin_t, argmin_s, num_locations, backend=backend)
    t1 = time.perf_counter()
    result = pms_from_cooccurrence(counts, np.asarray(argmin_t).shape[0], return_cooccurrence)
    result.timings = {"cooccurrence": t1 - t0, "matching": result.timings["matching"]}
    return result
