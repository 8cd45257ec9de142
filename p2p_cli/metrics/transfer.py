"""Interpretability-transfer metrics of Proto2Proto (CVPR 2022, §3.1): AAP, AJS and PMS.

Every function here works on the two arrays one evaluation pass gives per model:

* ``argmin`` — shape ``(N, m)``, integer: for image ``n`` and prototype ``j`` the flat grid
  location ``ℓ = h·W + w`` in ``[0, H·W)`` of the patch closest to the prototype;
* ``min_dist`` — shape ``(N, m)``, float: that minimum squared-L2 distance.

``N`` is the number of images, ``m`` the number of prototypes (teacher and student may differ
after pruning) and ``num_locations = H·W``. Nothing here touches a model.

Definitions (paper equation numbers; SPEC §6 fixes the details the paper leaves open):

* **Active patch** (Eq. 1-2): location ℓ of image n is active if some prototype has its argmin
  at ℓ with minimum distance ``≤ τ``.
* **AAP** (Eq. 7): mean over images of the number of distinct active locations.
* **AJS** (Eq. 8): mean over images of ``|A^T ∩ A^S| / |A^T ∪ A^S|``.
* **PMS** (Algorithm 1 and the public code's "modified Jaccard"): see :func:`pms`.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from p2p_cli.errors import P2PError

if TYPE_CHECKING:
    import torch

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

Fidelity = Literal["paper", "reference"]
Backend = Literal["auto", "int8", "bf16", "fp32"]

# Images per chunk for the bf16 backend: every partial sum of a co-occurrence count is then an
# integer in [0, 256], and all such integers are exactly representable in bfloat16 (8
# significant bits), whatever order or precision the GEMM accumulates in.
_BF16_EXACT_IMAGES = 256
# Target size of one GEMM call's one-hot operands in bytes per prototype column: the inner
# dimension (operand rows) is ``_TARGET_K / itemsize`` (8192 in int8, 2048 in fp32), which bounds
# the operands to about ``_TARGET_K · (mT + mS)`` bytes per chunk, e.g. 32 MB for m = 1960.
_TARGET_K = 8192
# Elements per block when an O(N·m) temporary is needed (bounded extra memory).
_ROWS_ELEMS = 1 << 21


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _as_argmin(argmin: object, num_locations: int, name: str) -> np.ndarray:
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


def _as_dist(min_dist: object, shape: tuple[int, ...], name: str) -> np.ndarray:
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


def _check_tau(tau: float) -> float:
    tau = float(tau)
    if math.isnan(tau):
        raise P2PError("tau must be a number or inf, got NaN")
    return tau


# --------------------------------------------------------------------------------------------
# AAP / AJS (Eq. 1-2, 7, 8)
# --------------------------------------------------------------------------------------------


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
    loc = _as_argmin(argmin, num_locations, "argmin")
    dist = _as_dist(min_dist, loc.shape, "min_dist")
    tau = _check_tau(tau)
    n_img, m = loc.shape
    mask = np.zeros((n_img, num_locations), dtype=bool)
    every = math.isinf(tau) and tau > 0
    step = max(1, _ROWS_ELEMS // m)  # bounded temporaries
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


# --------------------------------------------------------------------------------------------
# PMS (Algorithm 1)
# --------------------------------------------------------------------------------------------


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


def _compact_codes(
    argmin_t: np.ndarray, argmin_s: np.ndarray, num_locations: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Map the locations used by *both* models to ``0..Ls-1`` and all others to ``Ls``.

    A location that only one model ever uses cannot contribute to any co-occurrence count,
    so it gets the code ``Ls``, which no one-hot row matches: the GEMMs' inner dimension is
    ``Ls·N`` instead of ``H·W·N``. Returns int16 (int32 for huge grids) code arrays of the
    input shapes, and ``Ls``.
    """
    used_t = np.zeros(num_locations, dtype=bool)
    used_t[argmin_t.ravel()] = True
    used_s = np.zeros(num_locations, dtype=bool)
    used_s[argmin_s.ravel()] = True
    shared = np.flatnonzero(used_t & used_s)
    code_dtype = np.int16 if num_locations < 2**15 - 1 else np.int32
    lut = np.full(num_locations, shared.size, dtype=code_dtype)
    lut[shared] = np.arange(shared.size, dtype=code_dtype)
    return lut[argmin_t], lut[argmin_s], int(shared.size)


def _cooccurrence_gemm(code_t: np.ndarray, code_s: np.ndarray, n_shared: int, backend: str) -> np.ndarray:
    """``I = Σ_chunks X_T(chunk)ᵀ · X_S(chunk)`` with one-hot operands, chunked over images.

    For a chunk of ``B`` images each model's operand has one row per (shared location c,
    image n) — row ``c·B + n`` — and one column per prototype: ``X[c·B + n, j] = 1`` iff
    prototype j has its argmin at shared location c in image n (built with one broadcast
    comparison ``code[None] == arange(Ls)[:, None, None]``). Then
    ``(X_Tᵀ X_S)[i, j] = #images of the chunk where ℓ_i^T = ℓ_j^S``. Locations not shared by
    the two models have code ``Ls`` and match no row. All buffers (``≈ Ls·B·(mT + mS)``
    one-byte elements, ``B·Ls ≈ 8192``) are allocated once and reused: memory does not grow
    with N.
    """
    import torch

    n_img, m_t = code_t.shape
    m_s = code_s.shape[1]
    acc = torch.zeros((m_t, m_s), dtype=torch.int32)
    if n_shared == 0:
        return acc.numpy()
    itemsize = {"int8": 1, "bf16": 2}.get(backend, 4)
    per_chunk = min(n_img, max(1, _TARGET_K // (itemsize * n_shared)))
    if backend == "bf16":
        per_chunk = min(per_chunk, _BF16_EXACT_IMAGES)
    ct_all = torch.from_numpy(np.ascontiguousarray(code_t))
    cs_all = torch.from_numpy(np.ascontiguousarray(code_s))
    blocks = torch.arange(n_shared, dtype=ct_all.dtype)[:, None, None]
    hot_t = torch.empty(n_shared * per_chunk * m_t, dtype=torch.bool)
    hot_s = torch.empty(n_shared * per_chunk * m_s, dtype=torch.bool)
    if backend == "int8":
        part = torch.empty((m_t, m_s), dtype=torch.int32)
    else:
        op_dtype = torch.bfloat16 if backend == "bf16" else torch.float32
        op_t = torch.empty(n_shared * per_chunk * m_t, dtype=op_dtype)
        op_s = torch.empty(n_shared * per_chunk * m_s, dtype=op_dtype)
        part = torch.empty((m_t, m_s), dtype=op_dtype)
    for n0 in range(0, n_img, per_chunk):
        n1 = min(n_img, n0 + per_chunk)
        k = n_shared * (n1 - n0)
        xt = hot_t[: k * m_t].view(n_shared, n1 - n0, m_t)
        torch.eq(ct_all[n0:n1].unsqueeze(0), blocks, out=xt)
        xs = hot_s[: k * m_s].view(n_shared, n1 - n0, m_s)
        torch.eq(cs_all[n0:n1].unsqueeze(0), blocks, out=xs)
        if backend == "int8":
            # bool and int8 share the byte layout: reinterpret, no copy. Teacher operand is
            # passed as a transposed view.
            a_op = _unambiguous(xt.view(torch.int8).view(k, m_t).t())
            b_op = _unambiguous(xs.view(torch.int8).view(k, m_s))
            torch._int_mm(a_op, b_op, out=part)  # int8 x int8 -> int32: exact
            acc += part
        else:
            a_op = _unambiguous(op_t[: k * m_t].view(k, m_t).copy_(xt.view(k, m_t)).t())
            b_op = _unambiguous(op_s[: k * m_s].view(k, m_s).copy_(xs.view(k, m_s)))
            torch.mm(a_op, b_op, out=part)  # exact: see pms() docstring
            acc += part.to(torch.int32)
    return acc.numpy()


def _unambiguous(x: torch.Tensor) -> torch.Tensor:
    """A row-major copy of a matrix that has a size-1 dimension, else ``x`` itself.

    ``torch._int_mm`` on CPU (seen with torch 2.14) returns garbage for a ``(1, K)`` operand
    with strides ``(1, 1)`` — what the transposed view gives when the teacher has a single
    prototype. Such operands are tiny, so copying them costs nothing.
    """
    import torch

    if 1 in x.shape:
        return torch.empty(x.shape, dtype=x.dtype).copy_(x)
    return x


def _check_cooccurrence(counts: np.ndarray, argmin_t: np.ndarray, argmin_s: np.ndarray, n_loc: int) -> bool:
    """Exact O(N·(mT + mS)) invariant check of a co-occurrence matrix (row and column sums).

    ``Σ_j I_ij = Σ_n c^S[n, ℓ_i^T(n)]`` where ``c^S[n, ℓ]`` counts the student prototypes with
    argmin ℓ in image n; symmetrically for the columns. Guards the GEMM backends against a
    silently inexact kernel on unusual hardware.
    """
    n_img, m_t = argmin_t.shape
    m_s = argmin_s.shape[1]
    rows = np.zeros(m_t, dtype=np.int64)
    cols = np.zeros(m_s, dtype=np.int64)
    step = max(1, _ROWS_ELEMS // max(m_t, m_s, n_loc))
    for n0 in range(0, n_img, step):
        n1 = min(n_img, n0 + step)
        b = n1 - n0
        base = (np.arange(b, dtype=np.int64) * n_loc)[:, None]
        cnt_t = np.bincount((argmin_t[n0:n1] + base).ravel(), minlength=b * n_loc).reshape(b, n_loc)
        cnt_s = np.bincount((argmin_s[n0:n1] + base).ravel(), minlength=b * n_loc).reshape(b, n_loc)
        rows += np.take_along_axis(cnt_s, argmin_t[n0:n1], axis=1).sum(axis=0, dtype=np.int64)
        cols += np.take_along_axis(cnt_t, argmin_s[n0:n1], axis=1).sum(axis=0, dtype=np.int64)
    return bool(
        np.array_equal(counts.sum(axis=1, dtype=np.int64), rows)
        and np.array_equal(counts.sum(axis=0, dtype=np.int64), cols)
    )


def _int8_available() -> bool:
    """Whether ``torch._int_mm`` is both fast here (AMX-INT8 / AVX512-VNNI) and correct."""
    from p2p_cli.runtime.hardware import cpu_has_fast_int8

    if not cpu_has_fast_int8():  # elsewhere it runs ~100× slower than an fp32 GEMM (p2p_cli.runtime.hardware)
        return False
    try:
        import torch

        probe = torch.ones((2, 3), dtype=torch.int8)
        out = torch._int_mm(probe, probe.t())
        return bool(out.dtype == torch.int32 and int(out[0, 0]) == 3)
    except Exception:  # noqa: BLE001 - any failure means "not usable here"
        return False


def cooccurrence(argmin_t: object, argmin_s: object, num_locations: int, backend: Backend = "auto") -> np.ndarray:
    """Prototype co-occurrence matrix ``I`` of PMS (SPEC §6).

    ``I[i, j] = #{n : argmin_t[n, i] == argmin_s[n, j]}`` — the number of images where
    teacher prototype i and student prototype j pick the same grid location. This equals
    ``|q_i^T ∩ q_j^S|`` for Algorithm 1's sets ``q = {UNIQUE-ID(ℓ, n)}``.

    Backends (all exact; see :func:`pms` for the argument):
        ``"int8"`` int8 one-hot GEMM with int32 accumulation (``torch._int_mm``; AMX/VNNI);
        ``"bf16"`` bf16 one-hot GEMM over chunks of ≤ 256 images;
        ``"fp32"`` fp32 one-hot GEMM (exact while chunk counts < 2^24);
        ``"auto"`` int8 on a CPU with AMX-INT8 or AVX512-VNNI where this torch build runs it,
        else fp32 (elsewhere ``_int_mm`` is emulated: ~100× slower than fp32, measured).

    Args:
        argmin_t: ``(N, mT)`` int; argmin_s: ``(N, mS)`` int; num_locations: ``H·W``.

    Returns:
        ``(mT, mS)`` int32 array (counts ≤ N).
    """
    loc_t = _as_argmin(argmin_t, num_locations, "teacher argmin")
    loc_s = _as_argmin(argmin_s, num_locations, "student argmin")
    if loc_t.shape[0] != loc_s.shape[0]:
        raise P2PError(
            f"teacher and student were evaluated on different numbers of images ({loc_t.shape[0]} vs {loc_s.shape[0]})"
        )
    if loc_t.shape[0] >= 2**31:
        raise P2PError("PMS supports at most 2^31 - 1 images")
    if backend not in ("auto", "int8", "bf16", "fp32"):
        raise P2PError(f"unknown co-occurrence backend {backend!r} (auto, int8, bf16, fp32)")
    chosen = backend
    if backend == "auto":
        chosen = "int8" if _int8_available() else "fp32"
    code_t, code_s, n_shared = _compact_codes(loc_t, loc_s, num_locations)
    counts = _cooccurrence_gemm(code_t, code_s, n_shared, chosen)
    if not _check_cooccurrence(counts, loc_t, loc_s, num_locations):
        if chosen == "fp32":
            raise RuntimeError("co-occurrence matrix failed its row/column-sum check (fp32 backend)")
        warnings.warn(
            f"co-occurrence backend {chosen!r} gave inexact counts on this machine; recomputing in fp32",
            RuntimeWarning,
            stacklevel=2,
        )
        counts = _cooccurrence_gemm(code_t, code_s, n_shared, "fp32")
        if not _check_cooccurrence(counts, loc_t, loc_s, num_locations):
            raise RuntimeError("co-occurrence matrix failed its row/column-sum check (fp32 backend)")
    return counts


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
    """Prototype Matching Score (paper Algorithm 1; SPEC §6).

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
        backend: co-occurrence backend (:func:`cooccurrence`).

    Returns:
        :class:`PMSResult`.
    """
    t0 = time.perf_counter()
    counts = cooccurrence(argmin_t, argmin_s, num_locations, backend=backend)
    t1 = time.perf_counter()
    result = pms_from_cooccurrence(counts, np.asarray(argmin_t).shape[0], return_cooccurrence)
    result.timings = {"cooccurrence": t1 - t0, "matching": result.timings["matching"]}
    return result
