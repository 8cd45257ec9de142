"""Training curves while a run trains: ``metrics.csv`` and, optionally, TensorBoard event files.

``metrics.csv`` holds one row per epoch and stage — the trainer's records, the same objects as
``metrics.jsonl``: ``epoch``, ``stage``, the loss terms (``total``, ``ce``, ``clst``, ``sep``,
``l1``, the distillation terms …), ``train_acc``, ``test_acc``, ``lr`` and ``seconds``.

Design: the file is **rewritten atomically from the full list of records** after every step
(:func:`write_metrics_csv`), never appended to. The columns are the union of the records' keys in
a stable order (:func:`csv_columns`), so a stage that brings new columns (the push's
``push_distance``, the last layer's ``ll_epoch``) simply widens the table, a reader never sees a
half-written line, and a resumed run — whose trainer restores its records from the snapshot —
rewrites exactly the rows an uninterrupted run would have. The cost is O(rows) per step, i.e.
nothing next to an epoch.

TensorBoard (``--log tensorboard``) needs the optional ``tensorboard`` package
(``pip install 'p2p-cli[tensorboard]'``); without it :class:`TensorBoardLog` is a one-line
:class:`~p2p_cli.errors.P2PError`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from p2p_cli.errors import P2PError
from p2p_cli.io.atomic import atomic_write_text

METRICS_CSV = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
LEADING = ("epoch", "stage", "ll_epoch")
"""Columns that come first, in this order, when present."""
TRAILING = ("train_acc", "test_acc", "lr", "seconds")
"""Columns that come last, in this order, when present; every other key sits between, in the
order it first appears in the records."""


def csv_columns(records: Iterable[dict[str, Any]]) -> list[str]:
    """The union of the records' keys: :data:`LEADING`, then the other keys in first-seen order
    (loss terms, ``lr_<group>``, push statistics …), then :data:`TRAILING`."""
    seen: dict[str, None] = {}
    for rec in records:
        for key in rec:
            seen.setdefault(str(key), None)
    middle = [k for k in seen if k not in LEADING and k not in TRAILING]
    return [k for k in LEADING if k in seen] + middle + [k for k in TRAILING if k in seen]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                         ("inf" if value > 0 else "-inf"))
    if isinstance(value, list | tuple | dict):
        import json

        return json.dumps(value)
    return str(value)


def metrics_csv_text(records: Sequence[dict[str, Any]]) -> str:
    """The CSV text of ``records`` (header + one line per record; a missing key is an empty cell;
    floats keep full precision)."""
    columns = csv_columns(records)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for rec in records:
        writer.writerow([_cell(rec.get(c)) for c in columns])
    return buf.getvalue()


def write_metrics_csv(path: str | Path, records: Sequence[dict[str, Any]]) -> None:
    """Atomically (re)write ``path`` with all ``records`` so far."""
    atomic_write_text(path, metrics_csv_text(records))


def read_metrics_csv(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.csv``: numbers as int/float, empty cells dropped, text kept."""
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh):
            rows.append({k: _parse(v) for k, v in raw.items() if v not in ("", None)})
    return rows


def _parse(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text, text)


def lr_fields(param_groups: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Learning rates of an optimizer's ``param_groups`` for a metrics row: ``lr`` (the first
    group's) and ``lr_<name>`` for every group that has a ``name`` (``lr_backbone``, ``lr_add_on`` …)."""
    out: dict[str, float] = {}
    for group in param_groups:
        lr = float(group["lr"])
        out.setdefault("lr", lr)
        if group.get("name"):
            out[f"lr_{group['name']}"] = lr
    return out


class TensorBoardLog:
    """TensorBoard scalars of the training records, in ``<run>/tensorboard/``.

    Every record is one global step (its index in the run's records): tags ``loss/<term>``,
    ``accuracy/train``, ``accuracy/test``, ``lr/<group>``, ``time/seconds`` and ``<stage>/<key>``
    for anything else numeric. :meth:`log_records` writes the records not yet written, so the
    trainer can pass its whole record list after every step. ``start`` (the number of records a
    resumed run already has) purges events at and after that step from an interrupted run.
    """

    LOSS_KEYS = frozenset({"total", "ce", "nll", "clst", "sep", "l1", "transfer", "ppc", "global", "hint", "rkd",
                           "rkd_distance", "rkd_angle", "kd"})

    def __init__(self, log_dir: str | Path, *, start: int = 0) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise P2PError("--log tensorboard needs the tensorboard package: "
                           "pip install 'p2p-cli[tensorboard]' (or pip install tensorboard)") from None
        self.log_dir = Path(log_dir)
        self.written = int(start)
        self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=self.written or None)

    def tags(self, record: dict[str, Any]) -> dict[str, float]:
        """Tag → value of one record's numeric fields."""
        stage = str(record.get("stage", "train"))
        out: dict[str, float] = {}
        for key, value in record.items():
            if key in ("epoch", "stage", "ll_epoch") or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if key in self.LOSS_KEYS:
                tag = f"loss/{key}"
            elif key in ("train_acc", "test_acc"):
                tag = f"accuracy/{key[:-4]}"
            elif key == "lr" or key.startswith("lr_"):
                tag = "lr/lr" if key == "lr" else f"lr/{key[3:]}"
            elif key == "seconds":
                tag = "time/seconds"
            else:
                tag = f"{stage}/{key}"
            out[tag] = float(value)
        return out

    def log_records(self, records: Sequence[dict[str, Any]]) -> int:
        """Write ``records[self.written:]``; returns how many were written."""
        new = records[self.written:]
        for offset, rec in enumerate(new):
            step = self.written + offset
            for tag, value in self.tags(rec).items():
                self._writer.add_scalar(tag, value, global_step=step)
        self.written += len(new)
        self._writer.flush()
        return len(new)

    def close(self) -> None:
        self._writer.close()


class RunLogs:
    """Everything a trainer logs per step: ``metrics.csv`` always, TensorBoard when asked.

    Wiring (one object per training run, rank 0 only)::

        logs = RunLogs(run.path, tensorboard=(log == "tensorboard"), start=len(state.records))
        ...after every step:   logs.update(state.records)
        ...at the end:         logs.close()
    """

    def __init__(self, run_path: str | Path, *, tensorboard: bool = False, start: int = 0) -> None:
        self.csv_path = Path(run_path) / METRICS_CSV
        self.tensorboard = TensorBoardLog(Path(run_path) / TENSORBOARD_DIR, start=start) if tensorboard else None

    def update(self, records: Sequence[dict[str, Any]]) -> None:
        write_metrics_csv(self.csv_path, records)
        if self.tensorboard is not None:
            self.tensorboard.log_records(records)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
