"""AAP / AJS / PMS against direct set-based implementations of the paper's definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from p2p_cli.errors import P2PError
from p2p_cli.metrics.active_patches import aap, active_mask, ajs
from p2p_cli.metrics.cooccurrence_gemm import cooccurrence
from p2p_cli.metrics.prototype_matching import pms, pms_from_cooccurrence, pms_thresholds

# A backend falling back to fp32 (its result failed the exactness check) must fail the tests.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

TAUS = [-1.0, 0.0, 0.01, 0.1, 0.2, 0.45, 1.0, 3.0, math.inf]
DIST_VALUES = [0.0, 0.01, 0.1, 0.2, 0.45, 0.5, 1.0, 3.0, 7.5]


# ---------------------------------------------------------------------------------------------
# Direct implementations written from the paper / the public code's definitions, with sets.
# ---------------------------------------------------------------------------------------------


def ref_active_sets(argmin, dist, tau):
    """Eq. 1-2: per image the set of locations some prototype picks with distance <= tau."""
    n_img, m = argmin.shape
    return [{int(argmin[n, j]) for j in range(m) if float(dist[n, j]) <= tau} for n in range(n_img)]


def ref_aap(argmin, dist, tau):
    sets = ref_active_sets(argmin, dist, tau)
    return sum(len(s) for s in sets) / len(sets)


def ref_ajs(at, dt, as_, ds, tau, both_empty):
    st_, ss = ref_active_sets(at, dt, tau), ref_active_sets(as_, ds, tau)
    total = 0.0
    for a, b in zip(st_, ss, strict=True):
        union = a | b
        total += both_empty if not union else len(a & b) / len(union)
    return total / len(st_)


def ref_caps(n_images):
    """The public code's ``range(int(0.1N), N, int(0.1N))``, with the tiny-N rule of ``pms_thresholds``."""
    step = max(1, int(0.1 * n_images))
    caps = list(range(step, n_images, step))
    return caps or [n_images]


def ref_modified_jaccard(q1, q2, cap):
    """The public code's ``jaccard_similarity(list1, list2, max_union)`` on sets."""
    inter = len(q1 & q2)
    union = len(q1) + len(q2) - inter
    if union == 0:
        return 0.0
    if inter >= cap:
        return 1.0
    return inter / min(union, cap)


def ref_pms(at, as_):
    """Algorithm 1 with sets of UNIQUE-ID(location, image) and a brute-force matching."""
    n_img, m_t = at.shape
    m_s = as_.shape[1]
    q_t = [{(int(at[n, i]), n) for n in range(n_img)} for i in range(m_t)]
    q_s = [{(int(as_[n, j]), n) for n in range(n_img)} for j in range(m_s)]
    scores = []
    for cap in ref_caps(n_img):
        sim = [[ref_modified_jaccard(q_t[i], q_s[j], cap) for j in range(m_s)] for i in range(m_t)]
        k = min(m_t, m_s)
        if m_t <= m_s:
            best = max(sum(sim[i][p[i]] for i in range(m_t)) for p in itertools.permutations(range(m_s), m_t))
        else:
            best = max(sum(sim[p[j]][j] for j in range(m_s)) for p in itertools.permutations(range(m_t), m_s))
        scores.append(best / k)
    return sum(scores) / len(scores)


def brute_cooccurrence(at, as_):
    m_t, m_s = at.shape[1], as_.shape[1]
    out = np.zeros((m_t, m_s), dtype=np.int64)
    for i in range(m_t):
        for j in range(m_s):
            out[i, j] = int(np.sum(at[:, i] == as_[:, j]))
    return out


# ---------------------------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------------------------


@st.composite
def model_pair(draw, max_n=24, max_m=4, max_l=6):
    n_img = draw(st.integers(1, max_n))
    m_t = draw(st.integers(1, max_m))
    m_s = draw(st.integers(1, max_m))
    n_loc = draw(st.integers(1, max_l))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Few locations per model make co-occurrence counts large enough to hit the clipping.
    pool_t = rng.choice(n_loc, size=rng.integers(1, n_loc + 1), replace=False)
    pool_s = rng.choice(n_loc, size=rng.integers(1, n_loc + 1), replace=False)
    at = pool_t[rng.integers(0, len(pool_t), (n_img, m_t))]
    as_ = pool_s[rng.integers(0, len(pool_s), (n_img, m_s))]
    dt = rng.choice(DIST_VALUES, (n_img, m_t)).astype(np.float32)
    ds = rng.choice(DIST_VALUES, (n_img, m_s)).astype(np.float32)
    return at, dt, as_, ds, n_loc


@settings(max_examples=150, deadline=None, database=None)
@given(model_pair(), st.sampled_from(TAUS))
def test_aap_ajs_match_set_definitions(case, tau):
    at, dt, as_, ds, n_loc = case
    assert aap(at, dt, tau, n_loc) == pytest.approx(ref_aap(at, dt, tau), abs=1e-12)
    assert aap(as_, ds, tau, n_loc) == pytest.approx(ref_aap(as_, ds, tau), abs=1e-12)
    for fidelity, both_empty in (("paper", 1.0), ("reference", 0.0)):
        got = ajs(at, dt, as_, ds, tau, n_loc, fidelity=fidelity)
        assert got == pytest.approx(ref_ajs(at, dt, as_, ds, tau, both_empty), abs=1e-12)


@settings(max_examples=150, deadline=None, database=None)
@given(model_pair())
def test_pms_matches_set_based_reference(case):
    at, _, as_, _, n_loc = case
    res = pms(at, as_, n_loc, return_cooccurrence=True)
    assert res.score == pytest.approx(ref_pms(at, as_), abs=1e-12)
    np.testing.assert_array_equal(res.cooccurrence, brute_cooccurrence(at, as_))
    assert res.num_matched == min(at.shape[1], as_.shape[1])
    assert len(res.row_ind) == len(res.col_ind) == res.num_matched
    assert res.m_values == ref_caps(at.shape[0])
    assert 1 <= res.num_solves <= len(res.m_values)


@settings(max_examples=60, deadline=None, database=None)
@given(model_pair(max_n=60, max_m=9, max_l=5))
def test_pms_solve_reuse_equals_independent_solves(case):
    """The reuse of matchings across caps must give the optimum of every cap."""
    at, _, as_, _, n_loc = case
    counts = brute_cooccurrence(at, as_)
    res = pms_from_cooccurrence(counts, at.shape[0])
    k = min(counts.shape)
    for cap, got in zip(res.m_values, res.per_k, strict=True):
        s = np.minimum(counts / cap, 1.0)
        r, c = linear_sum_assignment(s, maximize=True)
        assert got == pytest.approx(s[r, c].sum() / k, abs=1e-12)


def test_thresholds_equal_reference_range_for_all_n_up_to_20000():
    for n in range(10, 20001):
        assert pms_thresholds(n) == list(range(int(0.1 * n), n, int(0.1 * n)))
    assert pms_thresholds(8041) == [804 * k for k in range(1, 11)]
    assert pms_thresholds(8040) == [804 * k for k in range(1, 10)]


def test_thresholds_tiny_n():
    assert pms_thresholds(1) == [1]
    assert pms_thresholds(2) == [1]
    assert pms_thresholds(5) == [1, 2, 3, 4]
    with pytest.raises(P2PError):
        pms_thresholds(0)


@pytest.mark.parametrize("backend", ["int8", "bf16", "fp32", "auto"])
def test_cooccurrence_backends_exact_beyond_bf16_range(backend):
    # N = 700 > 256 images with few locations: counts reach ~N/2, far past bfloat16's exact
    # integer range (256), so an inexact accumulation would show.
    rng = np.random.default_rng(3)
    n_img, m_t, m_s, n_loc = 700, 37, 23, 49
    at = rng.choice([3, 7], (n_img, m_t))
    as_ = rng.choice([3, 7, 11], (n_img, m_s))
    expected = brute_cooccurrence(at, as_)
    assert expected.max() > 256
    np.testing.assert_array_equal(cooccurrence(at, as_, n_loc, backend=backend), expected)


@pytest.mark.parametrize("backend", ["int8", "bf16", "fp32"])
@pytest.mark.parametrize(("m_t", "m_s"), [(1, 1), (1, 3), (3, 1), (2, 2)])
def test_cooccurrence_single_prototype_shapes(backend, m_t, m_s):
    # (1, K) operands once made torch._int_mm return garbage (stride (1, 1) views).
    rng = np.random.default_rng(m_t * 10 + m_s)
    for n_img in (1, 2, 4, 9):
        at = rng.integers(0, 4, (n_img, m_t))
        as_ = rng.integers(0, 4, (n_img, m_s))
        got = cooccurrence(at, as_, 4, backend=backend)
        np.testing.assert_array_equal(got, brute_cooccurrence(at, as_))


def test_inexact_backend_is_detected_and_recomputed(monkeypatch):
    import p2p_cli.metrics.cooccurrence_gemm as gemm

    real = gemm._cooccurrence_gemm

    def corrupt(code_t, code_s, n_shared, backend):
        out = real(code_t, code_s, n_shared, backend)
        if backend == "int8":
            out = out.copy()
            out[0, 0] += 1
        return out

    monkeypatch.setattr(gemm, "_cooccurrence_gemm", corrupt)
    at = np.array([[0, 1], [1, 1], [0, 0]])
    with pytest.warns(RuntimeWarning, match="recomputing in fp32"):
        got = gemm.cooccurrence(at, at, 2, backend="int8")
    np.testing.assert_array_equal(got, brute_cooccurrence(at, at))


def test_cooccurrence_many_chunks(monkeypatch):
    import p2p_cli.metrics.cooccurrence_gemm as gemm

    monkeypatch.setattr(gemm, "_TARGET_K", 7)  # forces tiny chunks, ragged last chunk
    rng = np.random.default_rng(5)
    at = rng.integers(0, 9, (53, 6))
    as_ = rng.integers(0, 9, (53, 5))
    np.testing.assert_array_equal(gemm.cooccurrence(at, as_, 9), brute_cooccurrence(at, as_))


def test_cooccurrence_disjoint_locations_is_zero():
    at = np.zeros((5, 3), dtype=np.int64)
    as_ = np.ones((5, 2), dtype=np.int64)
    np.testing.assert_array_equal(cooccurrence(at, as_, 2), np.zeros((3, 2)))
    assert pms(at, as_, 2).score == 0.0


# ---------------------------------------------------------------------------------------------
# Hand-worked golden cases
# ---------------------------------------------------------------------------------------------

# Teacher: 2 images, 2 prototypes, 4 locations.
G_AT = np.array([[0, 1], [2, 2]])
G_DT = np.array([[0.1, 0.5], [0.3, 0.05]], dtype=np.float32)
# Student: 2 prototypes.
G_AS = np.array([[0, 3], [1, 2]])
G_DS = np.array([[0.1, 0.1], [0.5, 0.5]], dtype=np.float32)


def test_golden_active_mask_and_aap():
    # tau = 0.2: image 0 -> {0} (0.1 <= 0.2; 0.5 not); image 1 -> {2} (0.05) => AAP 1.0
    np.testing.assert_array_equal(
        active_mask(G_AT, G_DT, 0.2, 4), [[True, False, False, False], [False, False, True, False]]
    )
    assert aap(G_AT, G_DT, 0.2, 4) == 1.0
    # tau = inf: image 0 -> {0, 1}; image 1 -> {2} (two prototypes, one location) => 1.5
    assert aap(G_AT, G_DT, math.inf, 4) == 1.5
    # tau = 0.01: nothing active => 0
    assert aap(G_AT, G_DT, 0.01, 4) == 0.0


def test_golden_ajs():
    # tau = 0.2: T = [{0}, {2}], S = [{0, 3}, {}] -> (1/2 + 0/1) / 2 = 0.25 in both fidelities
    assert ajs(G_AT, G_DT, G_AS, G_DS, 0.2, 4) == 0.25
    assert ajs(G_AT, G_DT, G_AS, G_DS, 0.2, 4, fidelity="reference") == 0.25
    # tau = inf: T = [{0,1}, {2}], S = [{0,3}, {1,2}] -> (1/3 + 1/2) / 2 = 5/12
    assert ajs(G_AT, G_DT, G_AS, G_DS, math.inf, 4) == pytest.approx(5 / 12, abs=1e-15)
    # tau = 0.01: both empty in both images -> 1 (paper) / 0 (reference)
    assert ajs(G_AT, G_DT, G_AS, G_DS, 0.01, 4) == 1.0
    assert ajs(G_AT, G_DT, G_AS, G_DS, 0.01, 4, fidelity="reference") == 0.0


def test_tau_comparison_is_inclusive_and_in_float64():
    # float32(0.1) = 0.10000000149 > 0.1: not active at tau = 0.1 (the public code compares
    # Python floats), active at tau = float32(0.1) exactly.
    at = np.array([[1]])
    dt = np.array([[0.1]], dtype=np.float32)
    assert aap(at, dt, 0.1, 2) == 0.0
    assert aap(at, dt, float(np.float32(0.1)), 2) == 1.0


@pytest.mark.parametrize("tau", TAUS)
def test_ajs_teacher_with_itself_is_one(tau):
    rng = np.random.default_rng(0)
    at = rng.integers(0, 49, (40, 30))
    dt = rng.choice(DIST_VALUES, (40, 30))
    assert ajs(at, dt, at, dt, tau, 49) == 1.0


def test_ajs_reference_fidelity_below_one_with_empty_images():
    at = np.array([[0, 1], [1, 1]])
    dt = np.array([[0.1, 0.1], [5.0, 5.0]])  # image 1 has no active patch at tau = 1
    assert ajs(at, dt, at, dt, 1.0, 2) == 1.0
    assert ajs(at, dt, at, dt, 1.0, 2, fidelity="reference") == 0.5


def test_golden_pms():
    # N = 4 -> s = max(1, 0) = 1, caps m_k = 1, 2, 3.
    at = np.array([[0, 1], [0, 2], [0, 3], [0, 1]])
    as_ = np.array([[0, 1], [0, 2], [1, 3], [1, 0]])
    # I[0,0] = 2 (images 0,1), I[0,1] = 1 (image 3), I[1,0] = 1 (image 3), I[1,1] = 3.
    # cap 1: all ones -> 1; cap 2: [[1, .5], [.5, 1]] -> 1; cap 3: diag (2/3 + 1) / 2 = 5/6.
    # PMS = (1 + 1 + 5/6) / 3 = 17/18.
    res = pms(at, as_, 4, return_cooccurrence=True)
    np.testing.assert_array_equal(res.cooccurrence, [[2, 1], [1, 3]])
    assert res.m_values == [1, 2, 3]
    assert res.per_k == pytest.approx([1.0, 1.0, 5 / 6], abs=1e-15)
    assert res.score == pytest.approx(17 / 18, abs=1e-15)
    assert list(res.row_ind) == [0, 1] and list(res.col_ind) == [0, 1]
    assert res.num_matched == 2


def test_golden_pms_unequal_prototype_counts():
    # Teacher has 1 prototype, student 2: only min(1, 2) = 1 pair is matched.
    at = np.array([[0], [2], [0], [0]])
    as_ = np.array([[0, 1], [0, 2], [1, 3], [1, 0]])
    # I = [[1, 2]] (student 0 agrees on image 0; student 1 on images 1 and 3).
    # cap 1: 1; cap 2: 1; cap 3: 2/3 -> PMS = (1 + 1 + 2/3) / 3 = 8/9; matched to student 1.
    res = pms(at, as_, 4)
    assert res.score == pytest.approx(8 / 9, abs=1e-15)
    assert res.num_matched == 1 and res.num_teacher == 1 and res.num_student == 2
    assert list(res.row_ind) == [0] and list(res.col_ind) == [1]
    # Swapping roles gives the same score (the similarity is symmetric in T and S).
    assert pms(as_, at, 4).score == pytest.approx(8 / 9, abs=1e-15)


def test_pms_single_image():
    # N = 1: single cap m = 1, S = I in {0, 1}.
    assert pms(np.array([[0, 1]]), np.array([[1, 5, 0]]), 6).score == 1.0
    assert pms(np.array([[0, 1]]), np.array([[2, 2, 2]]), 6).score == 0.0
    assert pms(np.array([[0, 1]]), np.array([[2, 2, 1]]), 6).score == 0.5


def test_pms_single_prototype():
    at = np.array([[3], [1], [2]])
    assert pms(at, at, 4).score == 1.0
    # N = 3 -> caps 1, 2; I = 1 (image 0) -> per cap 1/1, 1/2 -> 0.75
    assert pms(at, np.array([[3], [0], [0]]), 4).score == 0.75
    assert pms(np.array([[3]]), np.array([[3]]), 4).score == 1.0
    assert pms(np.array([[3]]), np.array([[2]]), 4).score == 0.0


@pytest.mark.parametrize("n_img", [1, 2, 9, 10, 11, 99, 1000])
def test_pms_teacher_with_itself_is_one(n_img):
    rng = np.random.default_rng(n_img)
    at = rng.integers(0, 49, (n_img, 20))
    res = pms(at, at, 49)
    assert res.score == 1.0
    assert all(v == 1.0 for v in res.per_k)


def test_pms_permuted_student_is_one_and_matching_recovers_permutation():
    rng = np.random.default_rng(1)
    at = rng.integers(0, 49, (300, 25))
    perm = rng.permutation(25)
    res = pms(at, at[:, perm], 49)
    assert res.score == 1.0
    # teacher i was moved to student column where perm == i
    np.testing.assert_array_equal(perm[res.col_ind], res.row_ind)


def test_pms_bounds_random():
    rng = np.random.default_rng(2)
    at = rng.integers(0, 49, (200, 30))
    as_ = rng.integers(0, 49, (200, 40))
    res = pms(at, as_, 49)
    assert 0.0 < res.score < 1.0
    assert res.num_matched == 30


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_errors_are_user_errors():
    at = np.zeros((3, 2), dtype=np.int64)
    with pytest.raises(P2PError, match="different numbers of images"):
        pms(at, np.zeros((4, 2), dtype=np.int64), 4)
    with pytest.raises(P2PError, match="grid locations"):
        pms(at, np.full((3, 2), 4), 4)
    with pytest.raises(P2PError, match="NaN"):
        aap(at, np.full((3, 2), np.nan), 1.0, 4)
    with pytest.raises(P2PError, match="shape"):
        aap(at, np.zeros((3, 3)), 1.0, 4)
    with pytest.raises(P2PError, match="fidelity"):
        ajs(at, np.zeros((3, 2)), at, np.zeros((3, 2)), 1.0, 4, fidelity="papr")
    with pytest.raises(P2PError, match="no images"):
        pms(np.zeros((0, 2), dtype=np.int64), np.zeros((0, 2), dtype=np.int64), 4)
    with pytest.raises(P2PError, match="backend"):
        cooccurrence(at, at, 4, backend="gpu")
    with pytest.raises(P2PError):
        aap(at, np.zeros((3, 2)), math.nan, 4)
