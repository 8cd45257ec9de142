"""Which student prototype stands for which teacher prototype (Proto2Proto, Keswani et al.,
CVPR 2022, Algorithm 1 and Fig. 4).

Over N test images, ``argmin_t`` (N, mT) and ``argmin_s`` (N, mS) hold the grid cell (of the
same H × W grid) where each teacher and student prototype finds its closest patch. The
co-occurrence ``I[i, j]`` (mT, mS) counts the images on which teacher prototype i and student
prototype j point at the same cell; the Hungarian algorithm pairs the prototypes one to one on
it, and the prototype matching score PMS summarises the paired counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from p2p_cli.metrics.prototype_matching import pms
from p2p_cli.models.runs import LoadedRun


@dataclass
class Matching:
    """Hungarian matching of a student's prototypes to the teacher's on PMS co-occurrence."""

    student: str
    pms: float
    pairs: dict[int, int]  # teacher prototype -> student prototype
    cooccurrence: np.ndarray  # (mT, mS) images with the same argmin location
    n_images: int
    extra: dict[str, Any] = field(default_factory=dict)


def match_prototypes(student: str, argmin_t: np.ndarray, argmin_s: np.ndarray, num_locations: int) -> Matching:
    """PMS (paper Algorithm 1) of teacher vs student argmins (N, m) and its Hungarian matching."""
    result = pms(argmin_t, argmin_s, num_locations, return_cooccurrence=True)
    pairs = {int(i): int(j) for i, j in zip(result.row_ind, result.col_ind, strict=True)}
    assert result.cooccurrence is not None
    return Matching(student, float(result.score), pairs, np.asarray(result.cooccurrence), int(argmin_t.shape[0]))


def prototype_classes(run: LoadedRun, j: int) -> list[int]:
    """Classes prototype ``j`` of ``run`` belongs to (its nonzero entries of the (m, K) class identity)."""
    return [int(k) for k in np.nonzero(run.model.class_identity[j].cpu().numpy() > 0)[0]]


def gallery_rows(teacher: LoadedRun, c: int, count: int, similarities: np.ndarray | None = None) -> list[int]:
    """The teacher prototypes of class ``c`` the gallery shows: the ``count`` most similar to the
    explained image when its (m,) ``similarities`` are known, else the first ``count``."""
    rows = [j for j in range(teacher.model.num_prototypes) if teacher.model.class_identity[j, c] > 0]
    if similarities is not None:
        rows.sort(key=lambda j: -float(similarities[j]))
    return rows[: max(1, count)]


def teacher_first(runs: list[LoadedRun]) -> list[LoadedRun]:
    """Put the run that the others record as their teacher first (else keep the order): the
    gallery matches every other run's prototypes to the first one's."""
    for b in runs:
        path = b.run.path.resolve()
        for other in runs:
            t = other.meta.get("teacher")
            if other is not b and isinstance(t, dict) and (
                    (t.get("path") and Path(str(t["path"])).resolve() == path) or t.get("name") == b.name):
                return [b] + [o for o in runs if o is not b]
    return runs
