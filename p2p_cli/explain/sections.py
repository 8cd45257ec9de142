"""The sections of ``p2p visualize``'s self-contained HTML page: one per figure, each with the
text that says how to read it, and the per-model tables."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from p2p_cli.explain.gallery import Gallery
from p2p_cli.explain.local import Explanation
from p2p_cli.explain.panels import explanation_table
from p2p_cli.models.runs import LoadedRun
from p2p_cli.viz import figures, html

EXPLANATION_TEXT = (
    "For each model: its prediction, then the prototypes that contribute most to the explained class (contribution = "
    "similarity × last-layer weight). Left: the image with the prototype's similarity heat map (colormap inferno, "
    "bright = similar) and its 95th-percentile box (cyan); right: the training patch the prototype was projected onto.")
PARTS_TEXT = " Dashed green boxes: ground-truth parts."
GALLERY_TEXT = (
    "Teacher prototypes of one class beside the student prototypes the Hungarian algorithm matches to them on the PMS "
    "co-occurrence (images of the test set where both prototypes find their closest patch at the same grid cell; "
    "Proto2Proto Algorithm 1 and Fig. 4). Left: the source image with the prototype's 95th-percentile box (cyan) and "
    "receptive field (dashed white, drawn when smaller than the image); right: the patch.")
PATH_TEXT = (
    "The nodes visited by greedy routing, top to bottom: where each node's prototype is closest in the image (heat "
    "map, 95th-percentile box), its source patch, its Euclidean distance d and exp(−d), the probability of going "
    "right (\"present\").")


def new_page(image: Path | None, pil: Image.Image | None, runs: list[LoadedRun]) -> html.Page:
    """The page, titled by the image, its header naming the image (and its size) and the models."""
    return html.Page("p2p visualize" + (f" — {image.name}" if image else ""),
                     meta=("image: " + str(image) + (f" ({pil.width}×{pil.height} px)" if pil else "")
                           if image else "") + f"  ·  models: {', '.join(b.label for b in runs)}")


def explanation(page: html.Page, png: bytes, runs: list[LoadedRun], explanations: list[Explanation],
                columns: list[figures.Column], show_parts: bool) -> None:
    """The explanation figure, then per model a table of its top-k prototypes."""
    page.heading("Explanation")
    page.paragraph(EXPLANATION_TEXT + (PARTS_TEXT if show_parts else ""))
    page.image(html.Image(png, "explanation figure", ""))
    for b, exp, col in zip(runs, explanations, columns, strict=True):
        page.heading(b.label, 3)
        page.table(explanation_table(b, exp, col))


def decision_path(page: html.Page, run: LoadedRun, png: bytes) -> None:
    """A ProtoTree's decision-path figure."""
    page.heading(f"{run.label}: decision path")
    page.paragraph(PATH_TEXT)
    page.image(html.Image(png, f"decision path of {run.name}", ""))


def tree(page: html.Page, run: LoadedRun, png: bytes) -> None:
    """A ProtoTree's whole-tree figure."""
    page.heading(f"{run.label}: the tree")
    page.image(html.Image(png, f"tree of {run.name}", ""))


def gallery(page: html.Page, gallery: Gallery) -> None:
    """The matched-prototype gallery and its table."""
    page.heading("Matched prototypes (teacher ↔ students)")
    page.paragraph(GALLERY_TEXT)
    page.image(html.Image(gallery.png, "matched prototype gallery"))
    page.table(gallery.table)
