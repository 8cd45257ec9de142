"""Pixels and text for explanation figures: a prototype's source tiles, ground-truth part boxes,
coordinates between an image region and its display copy, and the labels the panels print.

Pure functions on uint8 RGB arrays ``(h, w, 3)``; regions are ``(x0, y0, x1, y1)`` in the
original image's pixels, boxes ``[x0, y0, x1, y1]`` in pixels of the array they refer to.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from p2p_cli.viz import render

PartBoxes = list[tuple[str, list[float]]]
"""``[(part name, [x0, y0, x1, y1]), ...]``."""

CORRECT_COLOR = "#1a7f37"
WRONG_COLOR = "#c62828"


def display_name(name: str) -> str:
    """Class names for people: underscores become spaces (``Black_footed_Albatross``)."""
    return name.replace("_", " ")


def signed(v: float) -> str:
    """A weight or contribution for a text panel: ``+0.123``, or ``+1234.5`` when large."""
    return f"{v:+.3f}" if abs(v) < 1000 else f"{v:+.1f}"


def verdict(predicted: int, true_label: int | None, num_classes: int) -> tuple[str, str]:
    """(prefix, colour) of a prediction line: ``✓ `` green when right, ``✗ `` red when wrong,
    nothing (black) when the true class is unknown."""
    if true_label is not None and true_label < num_classes:
        return ("✓ ", CORRECT_COLOR) if predicted == true_label else ("✗ ", WRONG_COLOR)
    return "", "black"


def source_tiles(image: np.ndarray, activation_box: Sequence[float], receptive_field_box: Sequence[float] | None,
                 long_side: int) -> tuple[np.ndarray, np.ndarray]:
    """A prototype's source image (uint8 (S, S, 3)) as two tiles: the image resized to
    ``long_side`` px wide with the activation box (cyan) and the receptive field (dashed white,
    drawn only when it covers less than 90 % of the image), and the patch inside the box."""
    patch = render.crop(image, activation_box)
    s = long_side / image.shape[1]
    big = render.resize(image, (long_side, round(image.shape[0] * s)))
    rf = receptive_field_box
    if rf is not None and (rf[2] - rf[0]) * (rf[3] - rf[1]) < 0.9 * image.shape[0] * image.shape[1]:
        big = render.draw_box(big, render.scale_box(rf, s, s), render.RF_COLOR, 1, dashed=True)
    big = render.draw_box(big, render.scale_box(activation_box, s, s), render.BOX_COLOR, 2)
    return big, patch


def boxes_on_display(parts: PartBoxes, region: Sequence[float], display: np.ndarray) -> PartBoxes:
    """Part boxes relative to ``region``'s origin (original pixels) → pixels of ``display``,
    the region shown at display size."""
    sx = display.shape[1] / (region[2] - region[0])
    sy = display.shape[0] / (region[3] - region[1])
    return [(name, render.scale_box(box, sx, sy)) for name, box in parts]


def to_original(box: Sequence[float], region: Sequence[float], display: np.ndarray) -> list[float]:
    """A box in pixels of ``display`` (``region`` at display size) → original image pixels,
    rounded to 0.1 px."""
    sx = (region[2] - region[0]) / display.shape[1]
    sy = (region[3] - region[1]) / display.shape[0]
    return [round(region[0] + box[0] * sx, 1), round(region[1] + box[1] * sy, 1),
            round(region[0] + box[2] * sx, 1), round(region[1] + box[3] * sy, 1)]


def with_parts(image: np.ndarray, parts: PartBoxes) -> np.ndarray:
    """``image`` with the part boxes drawn dashed green and labelled."""
    for name, box in parts:
        image = render.draw_box(image, box, render.PART_COLOR, width=1, dashed=True, label=name)
    return image


def where_it_fires(display: np.ndarray, upsampled: np.ndarray, box: Sequence[float],
                   parts: PartBoxes | None = None) -> np.ndarray:
    """The display image overlaid with a prototype's upsampled similarity map (h, w), the part
    boxes (if any) and the 95th-percentile box (cyan)."""
    image = render.overlay_heatmap(display, upsampled)
    if parts is not None:
        image = with_parts(image, parts)
    return render.draw_box(image, box, render.BOX_COLOR, width=2)
