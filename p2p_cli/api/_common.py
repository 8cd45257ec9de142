"""What every API function shares: the console reporter, the rank filter, list arguments."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from p2p_cli.runtime.device import Runtime
    from p2p_cli.runtime.reporter import Reporter

PathLike = str | Path


def reporter(quiet: bool, verbose: bool) -> Reporter:
    """The console reporter of a command: progress bars and tables on stderr unless ``quiet``."""
    from p2p_cli.runtime.reporter import Reporter

    return Reporter(enabled=not quiet, verbose=verbose)


def listed(values: Any) -> list[Any]:
    """``"a"`` → ``["a"]``; a sequence → a list; None → ``[]`` (one model, metric or image may be a string)."""
    if values is None:
        return []
    return [values] if isinstance(values, str | Path | int | float) else list(values)


def for_rank(rep: Reporter, rt: Runtime) -> Reporter:
    """``rep`` on the main process; a silent reporter on the other ranks of a torchrun job."""
    from p2p_cli.runtime.reporter import Reporter
    from p2p_cli.runtime.threads import threads_note

    if not rt.is_main:
        return Reporter(enabled=False, verbose=rep.verbose)
    rep.debug(threads_note())
    return rep
