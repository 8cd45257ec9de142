"""An exclusive lock per run directory: two processes never write one run.

The lock is ``WORKDIR/.NAME.lock``, a file held with ``flock(LOCK_EX | LOCK_NB)`` that records
the holder's pid. The kernel drops a ``flock`` when its process dies (SIGKILL, power loss of
the process, OOM killer), so a lock file left behind by a dead process is stale by
construction: the next writer takes it at once, and the pid inside is simply replaced. A live
holder makes a second writer fail immediately with a one-line error naming the pid.
The file sits beside the run directory, not inside it, so it survives the run being swapped
into place (:mod:`p2p_cli.io.rundir`).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from p2p_cli.errors import P2PError


def lock_path(run_path: Path) -> Path:
    """The lock file of the run directory ``run_path``: a hidden sibling ``.NAME.lock``."""
    return run_path.parent / f".{run_path.name}.lock"


def read_holder(path: Path) -> int | None:
    """The pid recorded in the lock file ``path``, or None when it holds none."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class RunLock:
    """The exclusive write lock of one run directory (a context manager; re-entrant use is a bug).

    ``acquire`` raises a :class:`~p2p_cli.errors.P2PError` naming the holder's pid when another
    live process holds the lock; ``release`` removes the lock file and frees it.
    """

    def __init__(self, run_path: Path) -> None:
        self.run_path = Path(run_path)
        self.path = lock_path(self.run_path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this process")  # a bug
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:  # retry when the file we locked was unlinked by a releasing holder meanwhile
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                holder = read_holder(self.path)
                who = f"pid {holder}" if holder is not None else "another process"
                raise P2PError(f"run '{self.run_path}' is being written by another p2p process ({who}); "
                               f"wait for it to finish or choose another --name") from None
            if _same_file(fd, self.path):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file (while still holding it), then drop the lock. Idempotent."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only parent: the kernel still drops the flock below
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    """True when the open ``fd`` is still the file at ``path`` (not an unlinked predecessor)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)
