"""Who may write an SQLite log: servers share it, the offline writing tools own it alone.

Several ``ringlog serve`` processes (the workers of one ``--workers N`` server, or separate
servers) may serve one SQLite file: SQLite serialises their appends (``BEGIN IMMEDIATE``), each
reads heads and idempotency keys inside its write transaction, and each learns of the others'
commits by commit discovery (:mod:`eventstore.sqlite`). Such servers take this lock **shared**.
The offline writing tools (``rebuild``, ``copy --to``) rewrite derived data or whole batches of
records on the assumption that nobody else writes meanwhile: they take it **exclusive**, and so
are refused with :class:`StoreLocked` while any server runs, and a server is refused while one
of them runs.

The lock is ``flock(LOCK_SH|LOCK_EX | LOCK_NB)`` on a sidecar file ``<db>.lock`` (never on the
database itself: SQLite's own POSIX locks on the database would be dropped when any descriptor
of that file is closed). The kernel releases it when the process ends, however it ends (a crash
or SIGKILL leaves no stale lock). An exclusive holder writes its pid into the file for the
refusal message. Read-only tools (replay, log, verify, copy *from*) do not take it. A flock
belongs to the open file description, which ``fork`` shares: the workers of a supervisor keep the
supervisor's shared lock even if the supervisor itself is killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from types import TracebackType

from eventstore.errors import StoreLocked, StoreUnavailable
from eventstore.factory import sqlite_path


class WriterLock:
    """The held writer lock of one SQLite log; :meth:`release` (or ``with``) gives it back."""

    def __init__(self, path: str, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    @property
    def held(self) -> bool:
        """True until released (always False for a store that needs no lock)."""
        return self._fd is not None

    def release(self) -> None:
        """Give the lock back (idempotent). The sidecar file stays: removing it would race."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def lock_path(db_path: str) -> str:
    """The sidecar file whose flock marks the owner of the SQLite log at ``db_path``."""
    return db_path + ".lock"


def acquire_writer_lock(url: str, *, shared: bool = False) -> WriterLock:
    """Take the writer lock of the log ``url`` names, without waiting.

    ``shared=True`` is what a server takes (several servers may hold it together);
    ``shared=False`` (exclusive) is what the offline writing tools take.

    Returns a held :class:`WriterLock` for an SQLite path, and one that holds nothing for other
    stores (PostgreSQL coordinates its writers itself; ``memory:`` has one by construction).
    Raises :class:`StoreLocked` (naming the file and the owner's pid) if another process holds
    it, :class:`StoreUnavailable` if the sidecar file cannot be created. Blocking file I/O: call
    it before the event loop starts, or in a thread.
    """
    path = sqlite_path(url)
    if path is None:
        return WriterLock(url, None)
    sidecar = lock_path(path)
    try:
        fd = os.open(sidecar, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise StoreUnavailable(f"cannot create the lock file {sidecar!r}: {e.strerror}") from e
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd) if shared else "a running server, or an exclusive tool"
        os.close(fd)
        raise StoreLocked(path, holder) from None
    except OSError as e:
        os.close(fd)
        raise StoreUnavailable(f"cannot lock {sidecar!r}: {e.strerror}") from e
    if not shared:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return WriterLock(path, fd)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "pid unknown"
