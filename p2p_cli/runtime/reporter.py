"""Console reporting for long loops: rich progress bars and end-of-stage metric tables.

Only the main process reports; ``quiet`` keeps the console silent except for errors. Tables never
cut a value: a table wider than the console is split into several, each repeating the key column
(:func:`print_fitted`). The console is as wide as ``COLUMNS`` says, else the terminal, else 160.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

from rich.cells import cell_len
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column, Table


def make_console(*, stderr: bool = False, file: TextIO | None = None) -> Console:
    """A console ``COLUMNS`` wide when that is set, else the terminal's width, else 160 columns
    (a pipe or a file: wide enough for every table in one piece)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return Console(stderr=stderr, file=file, width=int(columns))
    console = Console(stderr=stderr, file=file)
    return console if console.is_terminal else Console(stderr=stderr, file=file, width=160)


def print_fitted(console: Console, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], *,
                 keys: int = 1, left: int | None = None, styles: Sequence[str | None] | None = None) -> None:
    """Print a table whose cells are never cut: when it is wider than ``console``, its columns
    after the first ``keys`` (repeated in each part) are split over several tables titled
    ``TITLE (1/2)``, ``TITLE (2/2)``, …. The first ``left`` columns (default ``keys``) are
    left-aligned, the others right-aligned; ``styles`` gives each row's style."""
    left = keys if left is None else left
    widths = [max([cell_len(str(c))] + [cell_len(str(r[i])) for r in rows]) for i, c in enumerate(columns)]
    fixed = 1 + sum(w + 3 for w in widths[:keys])
    parts: list[list[int]] = [[]]
    used = fixed
    for i in range(keys, len(columns)):
        if parts[-1] and used + widths[i] + 3 > console.width:
            parts.append([])
            used = fixed
        parts[-1].append(i)
        used += widths[i] + 3
    for n, part in enumerate(parts):
        shown = list(range(keys)) + part
        label = title if len(parts) == 1 else f"{title} ({n + 1}/{len(parts)})"
        console.print(label, markup=False, soft_wrap=True, style="italic")
        table = Table()
        for i in shown:
            table.add_column(columns[i], justify="left" if i < left else "right", min_width=widths[i],
                             overflow="fold")
        for j, row in enumerate(rows):
            table.add_row(*(str(row[i]) for i in shown), style=styles[j] if styles else None)
        console.print(table)


class Reporter:
    def __init__(self, *, enabled: bool = True, verbose: bool = False, console: Console | None = None) -> None:
        self.enabled = enabled
        self.verbose = verbose
        self.console = console if console is not None else make_console(stderr=True)
        self.loss_weights: dict[str, float] | None = None
        """The weight of each loss term in ``total`` (set by the training commands): stage tables
        then show the weighted terms, which add up to the total."""

    def info(self, message: str) -> None:
        if self.enabled:
            self.console.print(message)

    def debug(self, message: str) -> None:
        if self.enabled and self.verbose:
            self.console.print(message, style="dim")

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        """A progress bar; yields ``advance(n=1, **fields)`` (fields show as a postfix)."""
        if not self.enabled:
            yield lambda n=1, **fields: None
            return
        wide = self.console.width >= 140
        columns = [TextColumn("[bold]{task.description}", table_column=Column(overflow="fold")),
                   BarColumn(bar_width=40 if wide else 10),
                   MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[postfix]}", table_column=Column(overflow="fold"))]
        if not wide:  # narrow terminals: no elapsed time, so that the line is not cut
            columns.pop(3)
        progress = Progress(*columns, console=self.console, transient=False)
        with progress:
            tid = progress.add_task(description, total=total, postfix="")

            def advance(n: int = 1, **fields: Any) -> None:
                postfix = "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
                progress.update(tid, advance=n, **({"postfix": postfix} if fields else {}))

            yield advance

    def table(self, title: str, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
        """Rows of numbers under ``title`` (columns: the first row's keys but ``seconds``); a row
        with a ``total`` shows its loss terms weighted (:attr:`loss_weights`), or says they are not."""
        if not self.enabled or not rows:
            return
        columns = columns or [k for k in rows[0] if k not in ("seconds",)]
        headers, scale = list(columns), [1.0] * len(columns)
        if "total" in columns:
            weights = self.loss_weights
            if weights is None:
                title += " (loss terms unweighted)"
            else:
                terms = [c for c in weights if c in columns]
                if "transfer" in columns and any(c in TRANSFER_PARTS for c in terms):
                    columns = [c for c in columns if c != "transfer"]  # its weighted parts are shown
                at = min(columns.index(c) for c in (*terms, "total"))  # the terms in weight order, then total
                rest = [c for c in columns[at:] if c not in terms and c != "total"]
                columns = columns[:at] + terms + ["total"] + rest
                headers, scale = [], []
                for c in columns:
                    w = weights.get(c, 1.0)
                    headers.append(c if w == 1.0 else f"{w:g}·{c}")
                    scale.append(w)
                title += " (total = the sum of the weighted terms)"
        cells = [[_fmt(_scaled(row.get(c), w)) for c, w in zip(columns, scale, strict=True)] for row in rows]
        print_fitted(self.console, title, headers, cells, left=0)


TRANSFER_PARTS = ("ppc", "global", "hint", "kd", "rkd_distance", "rkd_angle")
"""The distillation terms whose weighted sum is the ``transfer`` term."""


def _scaled(value: Any, weight: float) -> Any:
    return value * weight if isinstance(value, float) and weight != 1.0 else value


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)
