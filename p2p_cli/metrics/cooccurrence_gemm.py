"""The prototype co-occurrence matrix of PMS, as exact one-hot GEMMs (Proto2Proto Algorithm 1).

``I[i, j] = #{n : argmin_t[n, i] == argmin_s[n, j]}`` for a teacher's ``(N, mT)`` and a
student's ``(N, mS)`` argmin locations (:mod:`p2p_cli.metrics.arrays`): the number of images
where teacher prototype i and student prototype j pick the same grid location, i.e.
``|q_i^T ∩ q_j^S|`` for Algorithm 1's sets ``q = {UNIQUE-ID(ℓ, n)}``.

**Exactness.** I is computed as a sum of one-hot products chunked over images. Every operand
entry is 0 or 1 and every partial sum of a dot product is an integer between 0 and the chunk's
image count: int8 × int8 → int32 is exact; in the bf16 backend chunks hold ≤ 256 images, and
every integer in [0, 256] is exact in bfloat16 and float32, so no rounding can occur whatever
the kernel's accumulation order or precision; fp32 is exact below 2^24. Chunk results are
summed in int32. A row/column-sum check (``O(N·m)``, exact integers) verifies the result and
falls back to fp32 if a kernel was inexact on this machine.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal

import numpy as np

from p2p_cli.errors import P2PError
from p2p_cli.metrics.arrays import ROWS_ELEMS, as_argmin

if TYPE_CHECKING:
    import torch

__all__ = ["Backend", "cooccurrence"]

Backend = Literal["auto", "int8", "bf16", "fp32"]

# Images per chunk for the bf16 backend: every partial sum of a co-occurrence count is then an
# integer in [0, 256], and all such integers are exactly representable in bfloat16 (8
# significant bits), whatever order or precision the GEMM accumulates in.
_BF16_EXACT_IMAGES = 256
# Target size of one GEMM call's one-hot operands in bytes per prototype column: the inner
# dimension (operand rows) is ``_TARGET_K / itemsize`` (8192 in int8, 2048 in fp32), which bounds
# the operands to about ``_TARGET_K · (mT + mS)`` bytes per chunk, e.g. 32 MB for m = 1960.
_TARGET_K = 8192


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
            torch.mm(a_op, b_op, out=part)  # exact: see the module docstring
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
    step = max(1, ROWS_ELEMS // max(m_t, m_s, n_loc))
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
    """Prototype co-occurrence matrix ``I`` of PMS (Proto2Proto, Keswani et al. CVPR 2022, Algorithm 1).

    ``I[i, j] = #{n : argmin_t[n, i] == argmin_s[n, j]}`` — the number of images where
    teacher prototype i and student prototype j pick the same grid location. This equals
    ``|q_i^T ∩ q_j^S|`` for Algorithm 1's sets ``q = {UNIQUE-ID(ℓ, n)}``.

    Backends (all exact; the argument is in the module docstring):
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
    loc_t = as_argmin(argmin_t, num_locations, "teacher argmin")
    loc_s = as_argmin(argmin_s, num_locations, "student argmin")
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


