"""What a dataset index is: samples, the train/test index, indexing issues and data errors.

Coordinate convention (boxes, part locations): pixels of the *original* image after EXIF
orientation, origin at its top-left corner, x to the right, y down, pixel ``(i, j)`` covering
``[i, i+1) × [j, j+1)``. The readers in :mod:`p2p_cli.data.readers` convert every annotation
format to this convention; :mod:`p2p_cli.data.images` maps it to model-input pixels.

Every problem with the user's files is a :class:`DataError` (a :class:`P2PError`) whose message
is one line naming the file and what was expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from p2p_cli.errors import P2PError

Box = tuple[float, float, float, float]
"""``(x, y, w, h)``: top-left corner, width and height in original-image pixels."""
Part = tuple[float, float, bool]
"""``(x, y, visible)``: a part location in original-image pixels; x, y are meaningless if not visible."""


# ----------------------------------------------------------------------------- errors


_WORKER_PREFIX = re.compile(r"^Caught (\w+) in DataLoader worker process")


def _strip_worker_wrapper(message: str) -> str:
    """Recover the original one-line message from a DataLoader worker re-raise.

    ``torch`` re-raises a worker exception as ``type(exc)("Caught <Type> in DataLoader worker
    process N.\\nOriginal Traceback ...\\n<module>.<Type>: <message>")``; return ``<message>``.
    Any other text is returned unchanged.
    """
    head = _WORKER_PREFIX.match(message)
    if head is None:
        return message
    pattern = re.compile(rf"^(?:[\w.]+\.)?{re.escape(head.group(1))}: (.*)$", re.MULTILINE)
    found = pattern.findall(message)
    return found[-1].strip() if found else message.splitlines()[0]


class DataError(P2PError):
    """A problem with the dataset files; ``str(err)`` is always one line naming the file.

    DataLoader workers re-raise exceptions in the main process by calling the exception type
    with the worker's formatted traceback; this constructor strips that wrapper, so a
    ``DataError`` raised inside a worker surfaces in the main process as the same one-line
    ``DataError`` (the worker traceback is kept in :attr:`worker_traceback`).
    """

    def __init__(self, message: str = "") -> None:
        clean = _strip_worker_wrapper(str(message))
        self.worker_traceback: str | None = str(message) if clean != message else None
        super().__init__(clean)


def unwrap_worker_error(exc: BaseException) -> P2PError | None:
    """The user-facing :class:`P2PError` behind ``exc``, or ``None`` if it is not one.

    Follows ``__cause__``/``__context__`` and strips the DataLoader worker wrapper from any
    ``P2PError`` subclass (``DataError`` already does this itself).
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, P2PError):
            text = str(cur)
            clean = _strip_worker_wrapper(text)
            return cur if clean == text else P2PError(clean)
        cur = cur.__cause__ or cur.__context__
    return None


# ----------------------------------------------------------------------------- index types


@dataclass(frozen=True)
class Sample:
    """One image of a dataset index.

    ``bbox``: ``(x, y, w, h)`` of the object in original pixels, or ``None``.
    ``parts``: one ``(x, y, visible)`` per part, in part-id order, or ``None`` without part
    annotations; an invisible part has ``visible=False`` (its x, y are meaningless).
    """

    path: Path
    label: int
    bbox: Box | None = None
    parts: tuple[Part, ...] | None = None


MIN_CLASSES = 2
"""The fewest classes a dataset must have to train on (``p2p data check`` applies the same rule)."""


@dataclass
class DatasetIndex:
    """Train/test samples of a dataset; labels index ``classes`` (0-based).

    ``part_names`` names the entries of every ``Sample.parts`` (``None`` without part
    annotations); ``root`` is the folder the index was read from.
    """

    name: str
    root: Path
    classes: list[str]
    train: list[Sample]
    test: list[Sample]
    part_names: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: Literal["train", "test"]) -> list[Sample]:
        return self.train if name == "train" else self.test


@dataclass(frozen=True)
class Issue:
    """A non-fatal problem found while indexing; ``load_index`` raises on ``error`` ones."""

    check: str
    status: Literal["warn", "error"]
    detail: str


__all__ = ["Box", "DataError", "DatasetIndex", "Issue", "Part", "Sample", "unwrap_worker_error"]
