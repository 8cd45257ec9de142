"""Where a prototype comes from: the training image it was pushed onto.

The push (ProtoPNet, Chen et al. 2019, §2.2 "prototype projection") replaces every prototype
by its closest add-on patch of a training image of its class; ``p2p push-prototypes`` records
that image per prototype in ``prototypes.json`` (path, sha256, the region that was resized to
the S × S input, the 95th-percentile activation box and the receptive field of the source
cell, both in input pixels). A :class:`SourceView` is that record rebuilt as pixels, checked
against the file on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from p2p_cli.data.images import file_sha256, load_image, open_rgb
from p2p_cli.data.index import Sample
from p2p_cli.explain.images import model_input
from p2p_cli.models.runs import LoadedRun
from p2p_cli.viz.explanation import source_tiles
from p2p_cli.viz.render import placeholder


@dataclass
class SourceView:
    """A prototype's source: the input-resolution image (uint8 (S, S, 3)) and its boxes in it,
    or ``problem`` when it cannot be shown (no provenance, file missing or changed)."""

    image: np.ndarray | None
    activation_box: list[int] | None
    receptive_field_box: list[int] | None
    record: dict[str, Any] | None
    problem: str | None = None


class SourceCache:
    """Loads prototype source images once per (path, region, size) and checks their sha256."""

    def __init__(self) -> None:
        self._images: dict[tuple, np.ndarray] = {}
        self._sha: dict[str, str] = {}

    def view(self, run: LoadedRun, j: int) -> SourceView:
        """Prototype ``j`` of ``run``: its source image at the run's input size S, or the problem."""
        rec = run.record(j)
        if rec is None:
            return SourceView(None, None, None, None, "no provenance\n(run p2p push-prototypes)")
        src = rec.get("source")
        if not src:
            return SourceView(None, None, None, rec, "never pushed\n(no image of its class)")
        path = Path(src["path"])
        if not path.is_file():
            return SourceView(None, None, None, rec, "source image\nnot found")
        key = str(path)
        if key not in self._sha:
            self._sha[key] = file_sha256(path)
        if src.get("sha256") and self._sha[key] != src["sha256"]:
            return SourceView(None, None, None, rec, "source image changed\nsince the push")
        size = int(run.image_size)
        region = src.get("region")
        cache_key = (key, tuple(region) if region else None, bool(rec.get("crop_bbox")), size)
        if cache_key not in self._images:
            if region:
                pixels = model_input(open_rgb(path), size, tuple(region))  # type: ignore[arg-type]
            elif rec.get("crop_bbox"):  # provenance written before regions were recorded
                return SourceView(None, None, None, rec, "bbox crop unknown\n(re-run push-prototypes)")
            else:
                pixels = load_image(Sample(path, 0), size, crop_bbox=False)
            self._images[cache_key] = pixels.permute(1, 2, 0).numpy()
        return SourceView(self._images[cache_key], rec.get("activation_box"), rec.get("receptive_field_box"), rec)


def source_images(cache: SourceCache, run: LoadedRun, j: int, long_side: int
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Prototype ``j`` of ``run`` for a figure: (its source image at ``long_side`` px with the
    activation box and receptive field drawn, the patch inside the activation box, JSON info).
    Both images are a placeholder naming the problem when the source cannot be shown."""
    view = cache.view(run, j)
    if view.image is None or view.activation_box is None:
        ph = placeholder((long_side, long_side), view.problem or "no source")
        return ph, ph, {"problem": (view.problem or "").replace("\n", " ")}
    big, patch = source_tiles(view.image, view.activation_box, view.receptive_field_box, long_side)
    rec = view.record or {}
    info = {"path": rec.get("source", {}).get("path"), "index": rec.get("source", {}).get("index"),
            "label": rec.get("source", {}).get("label"), "location": rec.get("location"),
            "activation_box": view.activation_box, "receptive_field_box": view.receptive_field_box}
    return big, patch, info
