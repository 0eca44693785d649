"""Who may write a log: servers share it, the offline writing tools own it alone.

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

On PostgreSQL the same rule is a session advisory lock on :data:`OWNER_LOCK`: every serving
:class:`~eventstore.postgres.PostgresStore` (``open_store(url, shared=True)``) holds it
**shared** on its LISTEN connection for as long as it serves, and refuses to open while a tool
holds it; a tool takes it **exclusive** (``pg_try_advisory_lock``) with :func:`acquire_tool_lock`
on a connection of its own, kept for its whole run. PostgreSQL drops a session lock with its
session, so a crashed holder leaves no stale lock either. The window: while a server's LISTEN
connection is down (reconnect back-off, at most 5 s after a failure is noticed) it holds no
share, so a tool started then is not refused; the server, reconnecting, finds the exclusive lock
and logs an error each retry until the tool ends (docs/POSTGRES.md "Offline tools and running
servers").
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from types import TracebackType
from typing import Any

from eventstore.errors import StoreLocked, StoreUnavailable
from eventstore.factory import sqlite_path

OWNER_LOCK = 0x72696E676F776E72
"""PostgreSQL advisory lock key (``ringownr``): shared by serving stores, exclusive for tools."""

TOOL_APPLICATION_NAME = "ringlog-tool"
"""``application_name`` of a tool's lock connection (operators find it in pg_stat_activity)."""

TOOL_CONNECT_TIMEOUT = 10.0
"""Seconds a tool waits for its PostgreSQL lock connection before StoreUnavailable."""


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
    stores (a serving PostgreSQL store takes :data:`OWNER_LOCK` itself, and tools take it with
    :func:`acquire_tool_lock`; ``memory:`` has one writer by construction).
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


class ToolLock:
    """The exclusive writer lock an offline writing tool holds for its whole run.

    Wraps the SQLite :class:`WriterLock`, or the PostgreSQL connection that holds
    :data:`OWNER_LOCK` exclusively; :meth:`release` gives it back (idempotent).
    """

    def __init__(self, file_lock: WriterLock | None, connection: Any = None) -> None:
        self._file_lock = file_lock
        self._connection = connection

    async def release(self) -> None:
        """Give the lock back; call it only after this process closed the store."""
        file_lock, self._file_lock = self._file_lock, None
        connection, self._connection = self._connection, None
        if file_lock is not None:
            await asyncio.to_thread(file_lock.release)
        if connection is not None:
            try:
                await connection.close(timeout=2)
            except Exception:  # the session, and so its lock, ends either way
                connection.terminate()


async def acquire_tool_lock(url: str) -> ToolLock:
    """Take the log's writer lock exclusively for an offline writing tool, without waiting.

    SQLite: :func:`acquire_writer_lock` (exclusive). PostgreSQL: ``pg_try_advisory_lock`` on
    :data:`OWNER_LOCK` on a new connection, held until :meth:`ToolLock.release` (or the process
    ends). Raises :class:`StoreLocked` while a server holds it (or another tool does),
    :class:`StoreUnavailable` if the file or database cannot be reached.
    """
    if sqlite_path(url) is not None or url == "memory:":
        return ToolLock(await asyncio.to_thread(acquire_writer_lock, url))
    import asyncpg

    try:
        connection = await asyncpg.connect(
            url, timeout=TOOL_CONNECT_TIMEOUT, server_settings={"application_name": TOOL_APPLICATION_NAME}
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise StoreUnavailable(f"cannot connect to {redact_url(url)}: {e}") from e
    try:
        got = await connection.fetchval(
            "SELECT pg_try_advisory_lock($1)", OWNER_LOCK, timeout=TOOL_CONNECT_TIMEOUT
        )
    except BaseException as e:
        connection.terminate()
        if isinstance(e, (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)):
            raise StoreUnavailable(f"cannot lock {redact_url(url)}: {e}") from e
        raise
    if not got:
        await ToolLock(None, connection).release()
        raise StoreLocked(redact_url(url), "a running server, or an exclusive tool")
    return ToolLock(None, connection)


def redact_url(url: str) -> str:
    """``url`` with any user and password replaced by ``***`` (for messages and logs)."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
