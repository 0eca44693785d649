"""Who may write an SQLite log: servers share it, the offline writing tools own it alone.

Several ``ringlog serve`` processes (the workers of one ``--workers N`` server, or separate
servers) may serve one SQLite file: SQLite serialises their appends (``BEGIN IMMEDIATE``), each
reads heads and idempotency keys inside its write transaction, and each learns of the others'
commits by commit discovery (:mod:`eventstore.sqlite`). Such servers take this lock **shared**.
The offline writing tools (``rebuild``, ``copy --to``) rewrite derived data or whole batches of
records on the assumption that nobody else writes meanwhile: they take it **exclusive**, and so
are refused with :class:`StoreLocked` while any server runs, and a server is refused while one
of them runs.

The lock is ``flock(LOCK_SH|LOCK_EX | LOCK_NB)`` on the database file itself, so every name of
the file — its path, a symbolic link to it, a path through a linked directory — meets the same
lock, and deleting a sidecar cannot hide a holder. (A flock is independent of SQLite's own POSIX
byte-range locks on Linux; but closing *any* descriptor of the file drops this process's POSIX
locks, so the lock's descriptor is closed only by :meth:`WriterLock.release`, after the store is
closed.) A file with more than one hard link is refused: SQLite names its ``-wal`` and ``-shm``
files after the path, so two names of one file would write two WALs (SQLite's "How To Corrupt An
SQLite Database File", §2.5). The kernel releases the lock when the process ends, however it ends
(a crash or SIGKILL leaves no stale lock). An exclusive holder writes its pid into the sidecar
``<real path>.lock`` for the refusal message. Read-only tools (replay, log, verify, copy *from*)
do not take it. A flock belongs to the open file description, which ``fork`` shares: the workers
of a supervisor keep the supervisor's shared lock even if the supervisor itself is killed.
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
        """Give the lock back (idempotent); call it only after this process closed the store."""
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
    """The sidecar file where an exclusive holder of the log at ``db_path`` leaves its pid."""
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
    real = os.path.realpath(path)
    try:
        fd = os.open(real, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise StoreUnavailable(f"cannot open the database {path!r}: {e.strerror}") from e
    try:
        links = os.fstat(fd).st_nlink
        if links > 1:
            raise StoreUnavailable(
                f"{path!r} has {links} hard links; SQLite names its WAL after the path, so one log "
                "must have one name (use a symbolic link instead)"
            )
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = _read_holder(lock_path(real)) if shared else "a running server, or an exclusive tool"
        raise StoreLocked(path, holder) from None
    except StoreUnavailable:
        os.close(fd)
        raise
    except OSError as e:
        os.close(fd)
        raise StoreUnavailable(f"cannot lock {path!r}: {e.strerror}") from e
    if not shared:
        _write_holder(lock_path(real))
    return WriterLock(path, fd)


def _write_holder(sidecar: str) -> None:
    """Leave this process's pid where a refused server can name it (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(sidecar, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)


def _read_holder(sidecar: str) -> str:
    try:
        with open(sidecar, "rb") as f:
            text = f.read(32).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "pid unknown"
