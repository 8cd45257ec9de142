"""Dataset readers keyed by dataset kind, and the :func:`scan_index` / :func:`load_index` entry points.

One module per layout (:mod:`.cub`, :mod:`.cars`, :mod:`.folder`, :mod:`.synthetic`), each
exposing a :class:`~p2p_cli.data.readers.common.Reader` named ``READER``. A new dataset kind is
one new module, its line in :data:`READERS` and its name in
:data:`p2p_cli.io.config.DATASET_KINDS` (the config schema and the CLI's help read the kinds
there, below this package; the import fails if the two disagree).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from p2p_cli.data.index import DataError, DatasetIndex, Issue
from p2p_cli.data.readers import cars, cub, folder, synthetic
from p2p_cli.data.readers.common import IMAGE_EXTENSIONS, Reader
from p2p_cli.errors import P2PError, did_you_mean
from p2p_cli.io.config import DATASET_KINDS

READERS: dict[str, Reader] = {
    "synthetic": synthetic.READER,
    "cub": cub.READER,
    "cars": cars.READER,
    "folder": folder.READER,
}
KINDS: tuple[str, ...] = DATASET_KINDS
if tuple(READERS) != KINDS:  # a programming error: caught by the first import in any test
    raise ImportError(f"data.readers.READERS {tuple(READERS)} and io.config.DATASET_KINDS {KINDS} disagree")


def reader_for(kind: str) -> Reader:
    """The reader of dataset ``kind``; :class:`P2PError` naming the valid kinds otherwise."""
    if kind not in READERS:
        raise P2PError(f"unknown dataset '{kind}'{did_you_mean(kind, KINDS)}; choose from {', '.join(KINDS)}")
    return READERS[kind]


def scan_index(kind: str, root: str | os.PathLike | None = None,
               **synthetic_kwargs: Any) -> tuple[DatasetIndex, list[Issue]]:
    """Parse a dataset's layout and list its non-fatal problems without raising on them.

    Layout problems that make the index unreadable (missing root or index file, malformed
    line) raise :class:`DataError`; missing images and empty classes come back as issues.
    ``synthetic_kwargs`` only matter for ``kind="synthetic"`` without a root.
    """
    reader = reader_for(kind)
    if root is None:
        if reader.generate is None:
            raise DataError(f"dataset '{kind}' needs a data root (--data-root)")
        return reader.read(reader.generate(**{k: v for k, v in synthetic_kwargs.items() if v is not None}))
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: data root not found{reader.root_hint}")
    return reader.read(path)


def load_index(kind: str, root: str | os.PathLike | None = None, **synthetic_kwargs: Any) -> DatasetIndex:
    """Index a dataset of ``kind`` (``cub``, ``cars``, ``folder``, ``synthetic``) at ``root``.

    ``synthetic`` without a root generates (once, cached) the built-in dataset from
    ``synthetic_kwargs`` (preset, num_classes, train_per_class, test_per_class, image_size,
    seed); with a root it reads that directory with the CUB reader. Any problem — missing
    root/file, malformed line, missing image, class without training images — is a
    one-line :class:`DataError`.
    """
    index, issues = scan_index(kind, root, **synthetic_kwargs)
    errors = [i for i in issues if i.status == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more problems; run 'p2p data check')" if len(errors) > 1 else ""
        raise DataError(errors[0].detail + more)
    return index


__all__ = ["IMAGE_EXTENSIONS", "KINDS", "READERS", "Reader", "load_index", "reader_for", "scan_index"]
