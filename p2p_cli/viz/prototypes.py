"""The three images ``p2p push-prototypes`` saves per pushed prototype (ProtoPNet, Chen et al.
2019, §2.2 and Fig. 2's "prototype" column): the patch, the source image with its boxes, and
the source image with the prototype's similarity heat map.

Pure functions: a uint8 (S, S, 3) source image, boxes in its pixels and a float map in, PNG
bytes out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from p2p_cli.viz import render


def upscale(image_size: int, long_side: int) -> int:
    """The integer factor that brings an S-px image to at least ``long_side`` px (at least 1)."""
    return max(1, -(-long_side // image_size))


def prototype_pngs(image: np.ndarray, activation_box: Sequence[float], receptive_field_box: Sequence[float] | None,
                   similarity: np.ndarray) -> dict[str, bytes]:
    """``{"patch", "box", "heatmap"}`` PNGs of a prototype pushed onto ``image`` (S, S, 3):

    * ``patch``: the pixels inside the 95th-percentile ``activation_box`` (input resolution);
    * ``box``: the image with that box (cyan) and the ``receptive_field_box`` of the source cell
      (dashed white; omitted when it covers 90 % of the image or more);
    * ``heatmap``: the image overlaid with ``similarity``, the prototype's similarity map already
      upsampled to (S·f, S·f), and the box.

    Overlays are drawn at the size of ``similarity``, i.e. enlarged by the integer factor f.
    """
    s = image.shape[0]
    scale = similarity.shape[0] // s
    big = render.resize(image, (s * scale, s * scale))
    patch = render.png_bytes(render.crop(image, activation_box))
    boxed = big
    rf = receptive_field_box
    if rf and (rf[2] - rf[0]) * (rf[3] - rf[1]) < 0.9 * s * s:  # skip one covering the image
        boxed = render.draw_box(boxed, render.scale_box(rf, scale, scale), render.RF_COLOR, width=1, dashed=True)
    boxed = render.draw_box(boxed, render.scale_box(activation_box, scale, scale), render.BOX_COLOR, width=2)
    heat = render.draw_box(render.overlay_heatmap(big, similarity), render.scale_box(activation_box, scale, scale),
                           render.BOX_COLOR, 2)
    return {"patch": patch, "box": render.png_bytes(boxed), "heatmap": render.png_bytes(heat)}
