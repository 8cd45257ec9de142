"""Prototype provenance records from a push result and the dataset it ran over: for every prototype
the training image and patch it was projected onto (ProtoPNet's push, Chen et al. 2019, §2.2)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from p2p_cli.data.images import crop_box, file_sha256, image_dims
from p2p_cli.data.index import DatasetIndex
from p2p_cli.models.maps import high_activation_box, patch_box
from p2p_cli.models.receptive_field import receptive_field_boxes
from p2p_cli.training.push import PushResult


def provenance_records(result: PushResult, index: DatasetIndex, class_identity: torch.Tensor,
                       image_size: int, *, crop_bbox: bool = False, model: torch.nn.Module | None = None
                       ) -> list[dict[str, Any]]:
    """One JSON-ready record per prototype.

    Boxes are [x0, y0, x1, y1] in model-input pixels (an ``image_size`` square; x1, y1
    exclusive): ``patch_box`` the grid cell, ``activation_box`` the 95th-percentile box, and —
    when ``model`` (the pushed ProtoPNet) is given — ``receptive_field_box``, the exact receptive
    field of the source cell (:mod:`p2p_cli.models.receptive_field`). ``source.region`` is the
    part of the source image (original pixels) that was resized into the input.
    """
    records = []
    sha_cache: dict[int, str] = {}
    rf = receptive_field_boxes(model, image_size) if model is not None and (result.image_index >= 0).any() else None
    for j in range(len(result.image_index)):
        classes = torch.nonzero(class_identity[j] > 0).flatten().tolist()
        src = int(result.image_index[j])
        rec: dict[str, Any] = {
            "prototype": j,
            "classes": [index.classes[c] for c in classes],
            "class_ids": classes,
        }
        if src < 0:
            rec["source"] = None
        else:
            sample = index.train[src]
            if src not in sha_cache:
                sha_cache[src] = file_sha256(sample.path)
            loc = (int(result.location[j, 0]), int(result.location[j, 1]))
            region = [round(v, 2) for v in crop_box(sample, image_dims(sample.path), crop_bbox)]
            rec.update({
                "source": {"index": src, "path": str(sample.path), "sha256": sha_cache[src],
                           "label": index.classes[sample.label], "region": region},
                "location": list(loc),
                "distance_before": _num(result.distance_before[j]),
                "distance_after": _num(result.distance_after[j]),
                "patch_box": patch_box(loc, result.grid, image_size),
                "activation_box": high_activation_box(result.distance_maps[j], image_size),
                "crop_bbox": crop_bbox,
            })
            if rf is not None:
                rec["receptive_field_box"] = list(rf[loc[0]][loc[1]])
        records.append(rec)
    return records


def _num(x: torch.Tensor | float) -> float | None:
    v = float(x)
    return None if math.isnan(v) or math.isinf(v) else v


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    before = np.array([r["distance_before"] for r in records if r.get("distance_before") is not None])
    return {"prototypes": len(records), "unpushed": sum(r["source"] is None for r in records),
            "mean_distance_before": float(before.mean()) if before.size else None,
            "distinct_source_images": len({r["source"]["index"] for r in records if r["source"]})}
