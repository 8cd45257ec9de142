"""Console reporting for long loops: rich progress bars and end-of-stage metric tables.

Only the main process reports; ``quiet`` keeps the console silent except for errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class Reporter:
    def __init__(self, *, enabled: bool = True, verbose: bool = False, console: Console | None = None) -> None:
        self.enabled = enabled
        self.verbose = verbose
        if console is None:
            console = Console(stderr=True)
            if not console.is_terminal:
                console = Console(stderr=True, width=160)
        self.console = console

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
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[postfix]}"),
                            console=self.console, transient=False)
        with progress:
            tid = progress.add_task(description, total=total, postfix="")

            def advance(n: int = 1, **fields: Any) -> None:
                postfix = "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
                progress.update(tid, advance=n, **({"postfix": postfix} if fields else {}))

            yield advance

    def table(self, title: str, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
        if not self.enabled or not rows:
            return
        columns = columns or [k for k in rows[0] if k not in ("seconds",)]
        table = Table(title=title, title_justify="left")
        for col in columns:
            table.add_column(col, justify="right")
        for row in rows:
            table.add_row(*(_fmt(row.get(c)) for c in columns))
        self.console.print(table)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)
