"""The whole ProtoTree as one figure (matplotlib, Agg): a prototype patch at every internal node,
the class distribution's top classes at every leaf. Pure function: a nested tree, images and
strings in, PNG bytes out."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from p2p_cli.viz.render import PNG_OPTIONS

DPI = 130


def _layout(node: Any, depth: int, pos: dict[int, tuple[float, int]], counter: list[int]) -> float:
    """In-order x positions (leaves at consecutive integers), y = depth. Keys: id(node)."""
    if node.leaf is not None:
        x = float(counter[0])
        counter[0] += 1
    else:
        x = (_layout(node.left, depth + 1, pos, counter) + _layout(node.right, depth + 1, pos, counter)) / 2
    pos[id(node)] = (x, depth)
    return x


def tree_figure(root: Any, node_images: dict[int, np.ndarray], leaf_lines: dict[int, list[str]], *,
                title: str, highlight: set[int] | None = None) -> bytes:
    """``root``: a nested tree (``prototype``/``leaf``/``left``/``right``); ``node_images``:
    prototype index → uint8 (h, w, 3) patch; ``leaf_lines``: leaf index → text lines;
    ``highlight``: prototype and leaf ids (as ``("p", j)``/``("l", ℓ)`` hashes) drawn in colour.
    Left edges mean "prototype absent", right edges "present"."""
    pos: dict[int, tuple[float, int]] = {}
    counter = [0]
    _layout(root, 0, pos, counter)
    n_leaves = max(counter[0], 1)
    depth = max(d for _, d in pos.values()) + 1
    width = max(7.5, 1.25 * n_leaves + 1)
    height = 1.3 * depth + 1.4
    fig = Figure(figsize=(width, height), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1 - 0.45 / height))
    ax.set_xlim(-0.8, n_leaves - 0.2)
    ax.set_ylim(depth - 0.35, -0.6)
    ax.axis("off")
    fig.text(0.5, 1 - 0.2 / height, title, ha="center", va="top", fontsize=11, fontweight="bold")
    hl = highlight or set()
    size = 0.42  # half-side of a node image, in data units (x)

    def draw(node: Any) -> None:
        x, y = pos[id(node)]
        if node.leaf is not None:
            on = ("l", node.leaf) in hl
            lines = leaf_lines.get(node.leaf, [])
            ax.text(x, y - 0.15, f"leaf {node.leaf}\n" + "\n".join(lines), ha="center", va="top", fontsize=6.5,
                    bbox={"boxstyle": "round,pad=0.25", "fc": "#fff3c4" if on else "#f4f4f4",
                          "ec": "#c62828" if on else "#999999", "lw": 1.6 if on else 0.6})
            return
        for child, label in ((node.left, "absent"), (node.right, "present")):
            cx, cy = pos[id(child)]
            on = ("p", node.prototype) in hl and (("p", getattr(child, "prototype", None)) in hl
                                                  or ("l", getattr(child, "leaf", None)) in hl)
            ax.plot([x, cx], [y + 0.3, cy - 0.3], color="#c62828" if on else "#888888", lw=2.0 if on else 0.8,
                    zorder=1)
            ax.text((x + cx) / 2 + (0.08 if label == "present" else -0.08), (y + cy) / 2, label, fontsize=5.5,
                    ha="left" if label == "present" else "right", color="#555555")
            draw(child)
        img = node_images.get(node.prototype)
        if img is not None:
            ax.imshow(img, extent=(x - size, x + size, y + 0.3, y - 0.3), zorder=2, interpolation="lanczos")
        on = ("p", node.prototype) in hl
        ax.add_patch(_rect(x - size, y - 0.3, 2 * size, 0.6, "#c62828" if on else "#333333", 1.8 if on else 0.6))
        ax.text(x, y - 0.33, f"p{node.prototype}", ha="center", va="bottom", fontsize=6.5)

    draw(root)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white", pil_kwargs=PNG_OPTIONS)
    return buf.getvalue()


def _rect(x: float, y: float, w: float, h: float, color: str, lw: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, fill=False, edgecolor=color, linewidth=lw, zorder=3)
