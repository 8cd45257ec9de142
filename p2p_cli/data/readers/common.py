"""What every dataset reader shares: the :class:`Reader` record and the index checks.

A reader turns a dataset folder into a :class:`~p2p_cli.data.index.DatasetIndex` plus the list
of non-fatal issues (:class:`~p2p_cli.data.index.Issue`: missing images, empty classes).
Problems that make the index unreadable (missing index file, malformed line) raise
:class:`~p2p_cli.data.index.DataError` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p2p_cli.data.index import DatasetIndex, Issue, Sample

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})
"""File suffixes (lower case) that folder-based layouts treat as images."""

ReadFn = Callable[[Path], tuple[DatasetIndex, list[Issue]]]


@dataclass(frozen=True)
class Reader:
    """How to index one dataset kind.

    ``read(root)`` parses the layout at an existing folder ``root``. ``generate(**params)``,
    when set, builds the dataset and returns its folder, for use without a data root (the
    built-in synthetic dataset); ``root_hint`` is appended to the "data root not found" error.
    """

    read: ReadFn
    generate: Callable[..., Path] | None = None
    root_hint: str = ""


def class_issues(classes: list[str], train: list[Sample], test: list[Sample], where: str) -> list[Issue]:
    """Empty classes and empty splits: an error without training images, a warning without test ones."""
    n_train = np.bincount([s.label for s in train], minlength=len(classes))
    n_test = np.bincount([s.label for s in test], minlength=len(classes))
    issues = []
    for k, name in enumerate(classes):
        if n_train[k] + n_test[k] == 0:
            issues.append(Issue("empty classes", "error", f"{where}: class '{name}' has no images"))
        elif n_train[k] == 0:
            issues.append(Issue("empty classes", "error", f"{where}: class '{name}' has no training images"))
        elif n_test[k] == 0:
            issues.append(Issue("empty classes", "warn", f"{where}: class '{name}' has no test images"))
    if not train:
        issues.append(Issue("images", "error", f"{where}: no training images"))
    if not test:
        issues.append(Issue("images", "error", f"{where}: no test images"))
    return issues


def missing_files(samples: Sequence[Sample], listed_in: str) -> list[Issue]:
    """One error naming the first listed image that does not exist (and how many more)."""
    missing = [s.path for s in samples if not s.path.is_file()]
    if not missing:
        return []
    more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
    return [Issue("files", "error", f"{missing[0]}: image listed in {listed_in} not found{more}")]
