"""One owner per SQLite log: the writer lock a serving process (or a writing tool) holds.

An SQLite log is written by ONE process: its writer keeps heads and projections in memory and
learns of commits only through its own notifier, so a second ``ringlog serve`` on the same file
would serve stale state and miss the other's events (a store that supports several processes,
PostgreSQL, says so with ``Store.is_shared``). Until several processes can share a file, the
owner takes this lock and everyone else who would write is refused with :class:`StoreLocked`.

The lock is ``flock(LOCK_EX | LOCK_NB)`` on a sidecar file ``<db>.lock`` (never on the database
itself: SQLite's own POSIX locks on the database would be dropped when any descriptor of that
file is closed). The kernel releases it when the process ends, however it ends (a crash or
SIGKILL leaves no stale lock), and the file keeps the owner's pid for the refusal message.
Read-only tools (replay, log, verify, copy *from*) do not take it.

Lifting it for several workers: a flock belongs to the open file description, which ``fork``
shares, so a supervising process that takes the lock before starting its workers covers them
all; nothing in this module needs to change for that.
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


def acquire_writer_lock(url: str) -> WriterLock:
    """Take the writer lock of the log ``url`` names, without waiting.

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
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise StoreLocked(path, holder) from None
    except OSError as e:
        os.close(fd)
        raise StoreUnavailable(f"cannot lock {sidecar!r}: {e.strerror}") from e
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return WriterLock(path, fd)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "pid unknown"
