"""User-facing errors.

A :class:`P2PError` carries one clear line for the user; the CLI prints it to stderr and
exits non-zero without a traceback. Anything else that escapes is a bug and keeps its
traceback.
"""

from __future__ import annotations

import difflib
import errno
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


_OS_HINTS = {
    errno.ENOSPC: "free some space or choose another --workdir",
    errno.EDQUOT: "free some space or choose another --workdir",
    errno.EROFS: "choose a writable --workdir",
    errno.EACCES: "check the permissions or choose another --workdir",
    errno.EPERM: "check the permissions or choose another --workdir",
    errno.ENAMETOOLONG: "choose a shorter name",
    errno.EEXIST: "a file is in the way of a folder; choose another path",
    errno.ENOTDIR: "a file is in the way of a folder; choose another path",
}


def os_error_message(exc: OSError) -> str:
    """One line for a file-system fault: what failed, on which path, and what to do, e.g.
    ``no space left on device: 'runs/t/model.safetensors' (free some space or choose another --workdir)``."""
    what = (exc.strerror or type(exc).__name__).strip()
    what = what[:1].lower() + what[1:]
    path = f": '{exc.filename}'" if exc.filename is not None else ""
    if exc.filename2 is not None:
        path += f" → '{exc.filename2}'"
    hint = _OS_HINTS.get(exc.errno or -1)
    return f"{what}{path}" + (f" ({hint})" if hint else "")
