"""Part-based prototype metrics beyond the Proto2Proto paper: consistency and stability.

Definitions follow Huang et al., "Evaluation and Improvement of Interpretability for
Self-Explainable Part-Prototype Networks" (ICCV 2023), as their public evaluation code
computes them. For a prototype of class k, over the test images of class k:

1. upsample the prototype's similarity map bicubically to the image size and take the
   arg-max pixel (:func:`argmax_pixel`);
2. a *visible* annotated part is *covered* when its point lies in the box of half-side
   ``36/224 · S`` around that pixel, borders included (:func:`part_coverage`) — a binary
   image × part matrix per prototype;
3. **consistency** (:func:`prototype_consistency`): the prototype is consistent if some part
   is covered in at least 80 % of the images where that part is visible; the score is the
   percentage of consistent prototypes (:func:`consistency_score`);
4. **stability** (:func:`stability`): the same matrix for the images plus seeded Gaussian
   noise; the fraction of images whose part row is unchanged; the score is the mean over
   prototypes in percent (:func:`stability_score`).

Coordinates: ``x`` is the column and ``y`` the row, in pixels of the (resized) input image,
origin at the top-left pixel. Part annotations are ``(x, y, visible)`` in those coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from p2p_cli.errors import P2PError

__all__ = [
    "HALF_SIDE_FRAC",
    "argmax_pixel",
    "consistency_score",
    "part_coverage",
    "prototype_consistency",
    "stability",
    "stability_score",
]

HALF_SIDE_FRAC = 36 / 224
"""Half-side of the covering box as a fraction of the image side (36 px at 224 px)."""

# Similarity maps upsampled per call: bounds the (chunk, H_img, W_img) float32 temporary.
_MAPS_PER_CHUNK = 256


def _image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int | np.integer):
        h = w = int(image_size)
    else:
        dims = tuple(int(v) for v in image_size)
        if len(dims) != 2:
            raise P2PError(f"image_size must be an int or (height, width), got {image_size!r}")
        h, w = dims
    if h < 1 or w < 1:
        raise P2PError(f"image_size must be positive, got {image_size!r}")
    return h, w


def argmax_pixel(similarity_map: object, image_size: int | Sequence[int]) -> np.ndarray:
    """Arg-max pixel of similarity maps upsampled to the image size.

    Upsamples with ``torch.nn.functional.interpolate(mode="bicubic", align_corners=False)``
    (in float32) and takes the maximum; ties go to the first pixel in row-major order.

    Args:
        similarity_map: ``(H, W)`` or ``(n, H, W)`` prototype similarity map(s) (higher =
            more similar; pass ``-distance`` or the log-similarity, not the distance).
        image_size: ``S`` (square) or ``(height, width)`` of the input image.

    Returns:
        int64 ``(2,)`` or ``(n, 2)`` array of ``(x, y)`` = (column, row).
    """
    import torch
    import torch.nn.functional as F

    arr = np.asarray(similarity_map, dtype=np.float32)
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] < 1 or arr.shape[2] < 1:
        raise P2PError(f"similarity_map must be (H, W) or (n, H, W), got shape {np.shape(similarity_map)}")
    if np.isnan(arr).any():
        raise P2PError("similarity_map contains NaN")
    h_img, w_img = _image_hw(image_size)
    out = np.empty((arr.shape[0], 2), dtype=np.int64)
    with torch.no_grad():
        for n0 in range(0, arr.shape[0], _MAPS_PER_CHUNK):
            chunk = torch.from_numpy(arr[n0 : n0 + _MAPS_PER_CHUNK])[:, None]
            up = F.interpolate(chunk, size=(h_img, w_img), mode="bicubic", align_corners=False)
            flat = up.reshape(up.shape[0], -1).argmax(dim=1).numpy()
            out[n0 : n0 + len(flat), 0] = flat % w_img
            out[n0 : n0 + len(flat), 1] = flat // w_img
    return out[0] if single else out


def part_coverage(
    argmax_xy: object,
    parts: object,
    image_size: int | Sequence[int],
    half_side_frac: float = HALF_SIDE_FRAC,
) -> np.ndarray:
    """Which annotated parts each image's arg-max box covers (one prototype).

    Part p of image i is covered iff it is visible and
    ``|x_p − x_i| <= h_x`` and ``|y_p − y_i| <= h_y`` with ``h_x = half_side_frac · width``,
    ``h_y = half_side_frac · height`` (borders included; clipping the box to the image, as
    the reference does, changes nothing for points inside the image).

    Args:
        argmax_xy: ``(n_img, 2)`` arg-max pixel ``(x, y)`` of the prototype in each image.
        parts: ``(n_img, P, 3)`` part annotations ``(x, y, visible)``; ``visible`` is 0/1.
        image_size: ``S`` or ``(height, width)``.
        half_side_frac: box half-side as a fraction of the image side (default 36/224).

    Returns:
        ``(n_img, P)`` bool coverage matrix (False wherever the part is not visible).
    """
    xy = np.asarray(argmax_xy, dtype=np.float64)
    pts = np.asarray(parts, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise P2PError(f"argmax_xy must be (n_img, 2), got {xy.shape}")
    if pts.ndim != 3 or pts.shape[2] != 3 or pts.shape[0] != xy.shape[0]:
        raise P2PError(f"parts must be (n_img, P, 3) with n_img = {xy.shape[0]}, got {pts.shape}")
    if not (half_side_frac >= 0 and math.isfinite(half_side_frac)):
        raise P2PError(f"half_side_frac must be a finite number >= 0, got {half_side_frac}")
    h_img, w_img = _image_hw(image_size)
    hx, hy = half_side_frac * w_img, half_side_frac * h_img
    visible = pts[:, :, 2] > 0
    dx = np.abs(pts[:, :, 0] - xy[:, None, 0])
    dy = np.abs(pts[:, :, 1] - xy[:, None, 1])
    return visible & (dx <= hx) & (dy <= hy)


def prototype_consistency(coverage: object, visible: object, threshold: float = 0.8) -> bool:
    """Whether one prototype is consistent.

    Consistent iff for some part p: ``#covered(p) / #visible(p) >= threshold``, over the
    images of the prototype's class. A part never visible has ratio 0 (as in the reference,
    which divides by ``max(#visible, 1)``), so a prototype with no images is inconsistent.

    Args:
        coverage: ``(n_img, P)`` bool, from :func:`part_coverage`.
        visible: ``(n_img, P)`` bool/0-1 visibility of each part (``parts[..., 2] > 0``).
        threshold: the 80 % rule.
    """
    cov = np.asarray(coverage).astype(bool)
    vis = np.asarray(visible).astype(bool)
    if cov.shape != vis.shape or cov.ndim != 2:
        raise P2PError(f"coverage and visible must both be (n_img, P); got {cov.shape} and {vis.shape}")
    if (cov & ~vis).any():
        raise P2PError("coverage marks a part as covered in an image where it is not visible")
    covered = cov.sum(axis=0)
    shown = np.maximum(vis.sum(axis=0), 1)
    return bool(((covered / shown) >= threshold).any())


def consistency_score(per_prototype: Iterable[bool]) -> float:
    """Percentage (0-100) of consistent prototypes."""
    vals = np.asarray(list(per_prototype), dtype=bool)
    if vals.size == 0:
        raise P2PError("consistency score needs at least one prototype")
    return float(vals.mean() * 100.0)


def stability(coverage_clean: object, coverage_noisy: object) -> float:
    """Fraction of images whose part row is unchanged under noise (one prototype).

    Args:
        coverage_clean, coverage_noisy: ``(n_img, P)`` bool coverage on the clean and the
            noisy images (same images, same order).

    Returns:
        A float in ``[0, 1]``, or NaN when there are no images (skipped by
        :func:`stability_score`).
    """
    a = np.asarray(coverage_clean).astype(bool)
    b = np.asarray(coverage_noisy).astype(bool)
    if a.shape != b.shape or a.ndim != 2:
        raise P2PError(f"clean and noisy coverage must both be (n_img, P); got {a.shape} and {b.shape}")
    if a.shape[0] == 0:
        return float("nan")
    return float(np.all(a == b, axis=1).mean())


def stability_score(per_prototype: Iterable[float]) -> float:
    """Mean of the per-prototype stabilities, in percent (0-100); NaN entries are skipped."""
    vals = np.asarray(list(per_prototype), dtype=np.float64)
    vals = vals[~np.isnan(vals)]
    if vals.size == 0:
        raise P2PError("stability score needs at least one prototype with images")
    return float(vals.mean() * 100.0)
