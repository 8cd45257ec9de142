"""Figure layout (matplotlib, Agg): the side-by-side explanation figure and the matched gallery.

Both figures are grids with one *column per model* and one *row per prototype*. A model column
has three sub-columns: two images (e.g. where the prototype fires on the test image, and the
prototype's source patch) and a narrow text panel, so that labels never overlap the images.
An optional header row shows per model an image and a few lines (the prediction). Figures are
saved at :data:`DPI` with image cells of :data:`CELL_IN` inches, i.e. ~2× enlargement for the
112-px synthetic images. Pure functions: arrays and strings in, PNG bytes out.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass, field

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from p2p_cli.viz.render import PNG_OPTIONS

DPI = 150
CELL_IN = 1.5  # image cell side (inches): 225 px at DPI
TEXT_IN = 1.95  # text panel width (inches)
GAP_IN = 0.35  # gap between model columns
FONT = 8.0
TITLE_FONT = 10.5
WRAP = 27  # characters per text-panel line at FONT (30 wide letters overflow TEXT_IN)


@dataclass
class Cell:
    """One row of a model column: two images and a text panel.

    ``left``/``right``: uint8 (h, w, 3) images (any size; drawn with their aspect ratio).
    ``title``: first (bold) line; ``subtitle``: wrapped line(s) under it; ``fields``: (label,
    value) pairs printed as an aligned table; ``note``: a final wrapped line in italics.
    """

    left: np.ndarray
    right: np.ndarray
    title: str
    subtitle: str = ""
    fields: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""
    highlight: bool = False  # draw the title in the accent colour


@dataclass
class Column:
    """One model: a title, optional header image and header lines, and its rows."""

    title: str
    cells: list[Cell]
    header_lines: list[str] = field(default_factory=list)
    header_image: np.ndarray | None = None
    header_color: str = "black"  # colour of the first header line (e.g. green/red prediction)


def _image_axis(ax, image: np.ndarray) -> None:
    ax.imshow(image, interpolation="lanczos" if max(image.shape[:2]) < 200 else "antialiased")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_linewidth(0.6)
        spine.set_color("#888888")


def _text_panel(ax, cell: Cell) -> None:
    ax.axis("off")
    y = 0.97
    step = 0.105
    color = "#b3005e" if cell.highlight else "black"
    ax.text(0.02, y, cell.title, fontsize=FONT + 0.5, fontweight="bold", color=color, va="top", ha="left",
            transform=ax.transAxes)
    y -= step * 1.15
    for line in textwrap.wrap(cell.subtitle, WRAP)[:3] if cell.subtitle else []:
        ax.text(0.02, y, line, fontsize=FONT, color="#333333", va="top", ha="left", transform=ax.transAxes)
        y -= step
    y -= step * 0.25
    for label, value in cell.fields:
        ax.text(0.02, y, label, fontsize=FONT, color="#555555", va="top", ha="left", transform=ax.transAxes)
        ax.text(0.98, y, value, fontsize=FONT, family="monospace", va="top", ha="right", transform=ax.transAxes)
        y -= step
    for line in textwrap.wrap(cell.note, WRAP)[:2] if cell.note else []:
        ax.text(0.02, y, line, fontsize=FONT - 0.5, style="italic", color="#555555", va="top", ha="left",
                transform=ax.transAxes)
        y -= step


def panel_figure(columns: list[Column], *, title: str, left_label: str, right_label: str,
                 subtitle: str = "") -> bytes:
    """Render ``columns`` side by side; returns PNG bytes.

    Rows: an optional header row (when any column has header lines or an image), then
    ``max(len(c.cells))`` rows. ``left_label``/``right_label`` title the two image
    sub-columns above the first row.
    """
    if not columns:
        raise ValueError("panel_figure needs at least one column")
    n_rows = max(len(c.cells) for c in columns)
    has_header = any(c.header_lines or c.header_image is not None for c in columns)
    header_in = (CELL_IN if any(c.header_image is not None for c in columns) else 0.55) if has_header else 0.0
    row_in = CELL_IN + 0.12
    col_in = 2 * CELL_IN + TEXT_IN
    n = len(columns)
    width = n * col_in + (n - 1) * GAP_IN + 0.4
    sub_lines = [line for part in subtitle.split("  ·  ") for line in textwrap.wrap(part, int(width * 12))] \
        if subtitle and len(subtitle) > width * 12 else ([subtitle] if subtitle else [])
    title_in = 0.55 + 0.2 * len(sub_lines)
    label_in = 0.3
    height = title_in + header_in + (0.25 if has_header else 0.0) + label_in + max(n_rows, 1) * row_in + 0.2
    fig = Figure(figsize=(width, height), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    fig.text(0.5, 1 - 0.18 / height, title, ha="center", va="top", fontsize=TITLE_FONT + 1.5, fontweight="bold")
    for i, line in enumerate(sub_lines):
        fig.text(0.5, 1 - (0.48 + 0.2 * i) / height, line, ha="center", va="top", fontsize=FONT + 0.5,
                 color="#444444")

    def box(left_in: float, top_in: float, w_in: float, h_in: float):
        return fig.add_axes((left_in / width, 1 - (top_in + h_in) / height, w_in / width, h_in / height))

    for ci, col in enumerate(columns):
        x = 0.2 + ci * (col_in + GAP_IN)
        top = title_in
        # model title across the whole column
        tax = box(x, top - 0.05, col_in, 0.3)
        tax.axis("off")
        tax.text(0.0, 0.5, col.title, fontsize=TITLE_FONT, fontweight="bold", va="center", ha="left")
        tax.axhline(0.0, color="#999999", linewidth=0.8)
        top += 0.3
        if has_header:
            if col.header_image is not None:
                _image_axis(box(x, top, CELL_IN, header_in - 0.05), col.header_image)
                hx, hw = x + CELL_IN + 0.1, col_in - CELL_IN - 0.1
            else:
                hx, hw = x, col_in
            hax = box(hx, top, hw, header_in - 0.05)
            hax.axis("off")
            y = 0.95
            for li, line in enumerate(col.header_lines):
                for part in textwrap.wrap(line, int(hw * (11.5 if li == 0 else 13))) or [""]:
                    hax.text(0.0, y, part, fontsize=FONT + (1.0 if li == 0 else 0.0),
                             fontweight="bold" if li == 0 else "normal",
                             color=col.header_color if li == 0 else "#222222", va="top", ha="left")
                    y -= 0.16 if header_in > 1 else 0.3
            top += header_in - 0.05
        lab = box(x, top, 2 * CELL_IN + 0.08, label_in)
        lab.axis("off")
        lab.text(CELL_IN / 2 / (2 * CELL_IN + 0.08), 0.2, left_label, ha="center", va="bottom", fontsize=FONT,
                 color="#444444")
        lab.text((CELL_IN * 1.5 + 0.08) / (2 * CELL_IN + 0.08), 0.2, right_label, ha="center", va="bottom",
                 fontsize=FONT, color="#444444")
        top += label_in
        for ri, cell in enumerate(col.cells):
            y = top + ri * row_in
            _image_axis(box(x, y, CELL_IN, CELL_IN), cell.left)
            _image_axis(box(x + CELL_IN + 0.08, y, CELL_IN, CELL_IN), cell.right)
            _text_panel(box(x + 2 * CELL_IN + 0.16, y, TEXT_IN - 0.16, CELL_IN), cell)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white", pil_kwargs=PNG_OPTIONS)
    return buf.getvalue()
