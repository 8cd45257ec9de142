"""Part-based consistency and stability (Huang et al., ICCV 2023 definitions)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from p2p_cli.errors import P2PError
from p2p_cli.metrics.parts import (
    HALF_SIDE_FRAC,
    argmax_pixel,
    consistency_score,
    part_coverage,
    prototype_consistency,
    stability,
    stability_score,
)


def test_argmax_pixel_identity_size_is_exact_peak():
    sim = np.zeros((7, 7), dtype=np.float32)
    sim[2, 5] = 1.0  # row 2, column 5
    np.testing.assert_array_equal(argmax_pixel(sim, 7), [5, 2])  # (x = column, y = row)


def test_argmax_pixel_upsampled_peak_lands_in_its_cell_centre():
    sim = np.zeros((7, 7), dtype=np.float32)
    sim[2, 5] = 1.0
    x, y = argmax_pixel(sim, 224)
    # align_corners=False: cell (row 2, col 5) is centred at pixel (5.5·32 − 0.5, 2.5·32 − 0.5)
    assert x in (175, 176) and y in (79, 80)


def test_argmax_pixel_batch_and_non_square():
    maps = np.zeros((3, 4, 6), dtype=np.float32)
    maps[0, 0, 0] = 1.0
    maps[1, 3, 5] = 1.0
    maps[2, 1, 4] = 2.0
    maps[2, 3, 1] = 1.0  # smaller secondary peak
    out = argmax_pixel(maps, (4, 6))  # (height, width) equals the map: identity
    np.testing.assert_array_equal(out, [[0, 0], [5, 3], [4, 1]])
    out_big = argmax_pixel(maps, (40, 60))
    assert out_big.shape == (3, 2)
    assert out_big[1, 0] > 50 and out_big[1, 1] > 30  # bottom-right peak stays bottom-right


def test_argmax_pixel_tie_is_first_in_row_major_order():
    np.testing.assert_array_equal(argmax_pixel(np.ones((3, 3), dtype=np.float32), 3), [0, 0])


def test_argmax_pixel_errors():
    with pytest.raises(P2PError):
        argmax_pixel(np.zeros(5), 10)
    with pytest.raises(P2PError):
        argmax_pixel(np.zeros((2, 2)), 0)
    with pytest.raises(P2PError, match="NaN"):
        argmax_pixel(np.full((2, 2), np.nan), 4)


def test_part_coverage_box_borders_inclusive():
    assert HALF_SIDE_FRAC * 224 == pytest.approx(36.0)
    argmax_xy = np.array([[100, 100], [0, 0]])
    parts = np.array(
        [
            [[136, 100, 1], [137, 100, 1], [64, 64, 1], [100, 100, 0]],
            # image 1: near corner; far part; invisible part exactly on the pixel
            [[30, 30, 1], [200, 0, 1], [36, 37, 1], [0, 0, 0]],
        ],
        dtype=float,
    )
    cov = part_coverage(argmax_xy, parts, 224)
    expected = np.array(
        [
            [True, False, True, False],  # dx = 36 in; dx = 37 out; (36, 36) in; invisible
            [True, False, False, False],  # (30, 30) in; dx = 200 out; dy = 37 out; invisible
        ]
    )
    np.testing.assert_array_equal(cov, expected)


def test_part_coverage_non_square_uses_each_side():
    # height 112, width 224 -> hx = 36, hy = 18
    cov = part_coverage(np.array([[50, 50]]), np.array([[[86, 50, 1], [50, 68, 1], [50, 69, 1]]]), (112, 224))
    np.testing.assert_array_equal(cov, [[True, True, False]])


def test_part_coverage_shape_errors():
    with pytest.raises(P2PError):
        part_coverage(np.zeros((2, 2)), np.zeros((3, 4, 3)), 224)
    with pytest.raises(P2PError):
        part_coverage(np.zeros((2, 3)), np.zeros((2, 4, 3)), 224)


def test_prototype_consistency_eighty_percent_rule():
    visible = np.ones((5, 2), dtype=bool)
    cov = np.zeros((5, 2), dtype=bool)
    cov[:4, 0] = True  # part 0 covered in 4 of 5 = 80 % -> consistent (>=)
    assert prototype_consistency(cov, visible)
    cov[3, 0] = False  # 3 of 5 = 60 %
    assert not prototype_consistency(cov, visible)
    # part 1 visible in only 2 images and covered in both: 100 % -> consistent
    visible[2:, 1] = False
    cov[:2, 1] = True
    assert prototype_consistency(cov, visible)
    # lower threshold
    cov[:, 1] = False
    assert prototype_consistency(cov, visible, threshold=0.6)
    assert not prototype_consistency(cov, visible, threshold=0.61)


def test_prototype_consistency_never_visible_and_no_images():
    assert not prototype_consistency(np.zeros((3, 2), bool), np.zeros((3, 2), bool))
    assert not prototype_consistency(np.zeros((0, 2), bool), np.zeros((0, 2), bool))
    with pytest.raises(P2PError, match="not visible"):
        prototype_consistency(np.ones((1, 1), bool), np.zeros((1, 1), bool))


def test_consistency_score_percent():
    assert consistency_score([True, False, True, True]) == 75.0
    with pytest.raises(P2PError):
        consistency_score([])


def test_stability_rows_unchanged():
    clean = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=bool)
    noisy = clean.copy()
    assert stability(clean, noisy) == 1.0
    noisy[2, 1] = False  # one row changes
    assert stability(clean, noisy) == 0.75
    noisy[0] = [0, 1, 0]  # a second row changes in two places (still one image)
    assert stability(clean, noisy) == 0.5
    assert math.isnan(stability(np.zeros((0, 3), bool), np.zeros((0, 3), bool)))
    with pytest.raises(P2PError):
        stability(clean, noisy[:3])


def test_stability_score_mean_percent_skips_nan():
    assert stability_score([0.75, 0.5, float("nan")]) == 62.5
    with pytest.raises(P2PError):
        stability_score([float("nan")])


def test_end_to_end_pipeline_on_known_maps():
    # 3 images; the prototype's similarity peak sits on part 0 in every image.
    size = 28
    maps = np.zeros((3, 7, 7), dtype=np.float32)
    maps[:, 1, 1] = 1.0  # cell (row 1, col 1): centre pixel (5.5, 5.5) at 28 px
    parts = np.array([[[6, 6, 1], [25, 25, 1]]] * 3, dtype=float)
    cov = part_coverage(argmax_pixel(maps, size), parts, size)
    np.testing.assert_array_equal(cov, [[True, False]] * 3)
    assert prototype_consistency(cov, parts[..., 2] > 0)
