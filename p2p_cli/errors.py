"""User-facing errors.

A :class:`P2PError` carries one clear line for the user; the CLI prints it to stderr and
exits non-zero without a traceback. Anything else that escapes is a bug and keeps its
traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class P2PError(Exception):
    """An error caused by the user's input (files, flags, configs), not by a bug."""


class P2PWarning(UserWarning):
    """Something the user should know that does not stop the command (the CLI prints it as one
    ``warning: …`` line on stderr)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""
