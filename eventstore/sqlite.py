"""The embedded SQLite backend: WAL, durable by default, one writer with group commit.

Appends from any number of concurrent callers go to a bounded queue. A single writer task takes
everything pending, runs it as one ``BEGIN IMMEDIATE`` transaction in a dedicated thread (one
thread hop per group, not per event), then notifies subscribers and resolves each caller. Heads
and idempotency keys are read inside that transaction, so the checks hold even if another
process writes the same file. Reads use aiosqlite connections and never block the writer (WAL).

The schema keeps the invariants itself: ``UNIQUE(draft_id, seq)``, a trigger that refuses any
insert whose seq or position is not the next one, and triggers that refuse UPDATE and DELETE.
The stream id is stored in the column ``draft_id`` (the name of the first schema, kept so that
existing databases open without a migration; see :mod:`eventstore.sql`).

Several processes may serve one file (``shared=True``, what ``ringlog serve`` opens): SQLite
serialises their write transactions (``BEGIN IMMEDIATE``, waiting up to ``busy_timeout`` for
another process's transaction), the writer's head cache is used only when the log's last
position, read inside the transaction, is the one it was filled at, and each process learns of
the others' commits by commit discovery (:mod:`eventstore.discovery`).

Driver errors are mapped to the store's errors in one place, :func:`_store_error` (used through
:func:`_mapped_errors`), with the same meaning as on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from eventstore.discovery import CommitCursor, PeerWakeups
from eventstore.errors import LogCorrupted, StoreError, StoreUnavailable, UnrepresentableValue
from eventstore.events import (
    GENESIS_HASH,
    AppendResult,
    IdempotencyClaim,
    IdempotencyRecord,
    NewEvent,
    Record,
    Snapshot,
    check_continues,
    check_feed_entries,
)
from eventstore.groupcommit import GroupCommitter, Head, PendingAppend, plan_group
from eventstore.notifier import Notifier
from eventstore.peerbus import PeerBus
from eventstore.sql import (
    FEED_CHECKPOINT_KEY,
    FEED_TABLE,
    MAX_GROUP,
    QUEUE_SIZE,
    RECORD_COLUMNS,
    feed_entries_to_add,
    feed_read_query,
    feed_rows,
    mapped_errors,
    record_from_row,
    record_row,
)
from eventstore.values import check_text, clamp_int64, is_storable_text, read_limit

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS events (
    position  INTEGER PRIMARY KEY,
    draft_id  TEXT    NOT NULL,
    seq       INTEGER NOT NULL CHECK (seq >= 1),
    type      TEXT    NOT NULL,
    body      BLOB    NOT NULL,
    hash      BLOB    NOT NULL,
    idem_user TEXT,
    idem_key  TEXT,
    idem_fp   TEXT,
    UNIQUE (draft_id, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS events_idempotency
    ON events (idem_user, idem_key) WHERE idem_key IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS events_next_only BEFORE INSERT ON events
WHEN NEW.seq != COALESCE((SELECT MAX(seq) FROM events WHERE draft_id = NEW.draft_id), 0) + 1
  OR NEW.position != COALESCE((SELECT MAX(position) FROM events), 0) + 1
BEGIN SELECT RAISE(ABORT, 'ringlog: an event must take the next seq and position'); END;
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'ringlog: the event log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'ringlog: the event log is append-only'); END;
CREATE TABLE IF NOT EXISTS snapshots (
    draft_id TEXT PRIMARY KEY,
    seq      INTEGER NOT NULL,
    state    BLOB    NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1');
"""
    + FEED_TABLE
    + " WITHOUT ROWID;\n"
)

BUSY_TIMEOUT_MS = 5_000
"""How long a write waits for another process's write transaction before giving up (503)."""

TURN_POLL_MAX = 0.001
"""Longest pause (seconds) between two tries for the writers' turn lock of a shared file."""

POLL_INTERVAL = 0.2
"""Seconds between periodic commit discoveries of a shared store (lost wake-ups, new peers)."""

HEAD_CACHE_SIZE = 100_000
"""Streams whose head the writer remembers between groups at most."""

_INSERT = f"INSERT INTO events ({RECORD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"

_INSERT_UNCLAIMED = "INSERT INTO events (position, draft_id, seq, type, body, hash) VALUES (?, ?, ?, ?, ?, ?)"
"""A record without an idempotency claim: its three ``idem_*`` columns are left to their default
(NULL) instead of bound, because the driver binds ``None`` (and ``bytes``) through its adapter
lookup, ~0.3 µs each with the GIL held (docs/BENCHMARKS.md, "Issue 16: store appends")."""


def _store_error(e: BaseException, action: str) -> StoreError | None:
    """THE mapping of SQLite's and the OS's errors to the store's (None: not a storage error).

    Same meanings as :func:`eventstore.postgres._store_error`: the schema refusing a write
    (trigger, UNIQUE) is :class:`LogCorrupted`; a value the driver cannot bind (lone surrogate,
    integer beyond 64 bits) is :class:`UnrepresentableValue`; everything else that sqlite3 or
    the OS raises (locked, disk full, read-only, I/O error, not a database) is
    :class:`StoreUnavailable`. Messages carry ``repr`` of the driver's text, so no raw byte of a
    value reaches a log line.
    """
    if isinstance(e, StoreError):
        return e
    if isinstance(e, sqlite3.IntegrityError):
        return LogCorrupted(f"the log's schema refused the {action}: {str(e)!r}")
    if isinstance(e, UnicodeEncodeError | OverflowError):
        return UnrepresentableValue(
            f"a value of the {action}", f"the SQLite driver cannot bind it ({e.__class__.__name__})"
        )
    if isinstance(e, sqlite3.Error | OSError):
        return StoreUnavailable(f"SQLite {action} failed: {str(e) or type(e).__name__!r}")
    return None


def _mapped_errors(action: str) -> contextlib.AbstractContextManager[None]:
    """Re-raise a lower-layer error as the store's (:func:`_store_error`), ``from`` the original."""
    return mapped_errors(_store_error, action)


class SQLiteStore:
    """The Store on one SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        readers: int = 2,
        shared: bool = False,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        """``shared``: other processes may serve the same file (commit discovery runs)."""
        synchronous = synchronous.upper()
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        self.path = str(path)
        self.synchronous = synchronous
        self.notifier = Notifier()
        self._reader_count = readers
        self._readers: list[aiosqlite.Connection] = []
        self._next_reader = itertools.count()
        self._executor: ThreadPoolExecutor | None = None
        self._wconn: sqlite3.Connection | None = None
        self._committer = GroupCommitter(
            self._commit_group,
            max_group=MAX_GROUP,
            queue_size=QUEUE_SIZE,
            name="ringlog-writer",
        )
        self._heads = _HeadCache()  # touched only by the writer thread
        self._shared = shared
        self.poll_interval = poll_interval
        self._cursor = CommitCursor(self.notifier, self.read_all)
        self._wakeups: PeerWakeups | None = None
        self.peer_bus = PeerBus()
        """The peer bus (:mod:`eventstore.peerbus`): datagrams to the processes serving this file."""
        self._poller: asyncio.Task[None] | None = None
        self._turn_fd: int | None = None  # the writers' turn lock of a shared file (writer thread)

    @property
    def is_shared(self) -> bool:
        """True when opened ``shared``: other processes may append, caches must read the log's tail."""
        return self._shared

    @property
    def published_position(self) -> int:
        """The global position up to which committed records have been published here."""
        return self._cursor.position

    # -- life cycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the schema (idempotent), open the writer thread and the readers."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ringlog-writer")
        try:
            with _mapped_errors(f"open of {self.path!r}"):
                await self._in_writer_thread(self._open_writer)
                for _ in range(self._reader_count):
                    conn = await aiosqlite.connect(self.path)
                    await conn.execute("PRAGMA busy_timeout = 5000")
                    await conn.execute("PRAGMA query_only = 1")
                    self._readers.append(conn)
        except StoreError:
            await self.close()
            raise
        self._committer.start()
        if self._shared:
            await self._start_discovery()

    async def _start_discovery(self) -> None:
        self._cursor.position = await self.last_position()
        self._wakeups = PeerWakeups(self.path, self._cursor.schedule, self.peer_bus.receive)
        try:
            self._wakeups.open()
        except OSError as e:  # still correct, only slower: the periodic check finds every commit
            log.warning("no wake-ups from other processes (%s); polling every %.2fs", e, self.poll_interval)
            log.warning("no peer bus either: per-user limits count this process only")
            self._wakeups = None
        else:
            self.peer_bus.attach(self._wakeups.broadcast)
            self.peer_bus.start()
        self._poller = asyncio.get_running_loop().create_task(self._poll_loop(), name="ringlog-sqlite-poll")

    async def _poll_loop(self) -> None:
        """The periodic check: a lost wake-up delays delivery by one interval at most."""
        while True:
            await asyncio.sleep(self.poll_interval)
            self._cursor.schedule()

    def _open_writer(self) -> None:
        """Open the writer connection and create the schema (writer thread).

        On a shared file the schema is set up in the writers' turn (:func:`_take_turn`), so it
        never races another process's group commit or schema set-up, and a set-up that SQLite
        still answers "locked" or "busy" (switching a fresh file to WAL, a schema change seen
        mid-statement: cases its busy handler does not wait for) is tried again until
        :data:`BUSY_TIMEOUT_MS` has passed. Two workers of ``--workers 2`` starting on a fresh
        file, or a worker restarted while the others append, hit this (``sqlite3.OperationalError``
        at start, the worker exiting).
        """
        if self._shared:
            self._turn_fd = os.open(
                os.path.realpath(self.path) + ".writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        pause = 0.01
        while True:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                if self._turn_fd is not None:
                    _take_turn(self._turn_fd)
                try:
                    self._set_up(conn)
                finally:
                    if self._turn_fd is not None:
                        fcntl.flock(self._turn_fd, fcntl.LOCK_UN)
            except sqlite3.OperationalError as e:
                conn.close()
                text = str(e).lower()
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise
                log.info("SQLite open of %r: %s; trying again", self.path, e)
                time.sleep(pause)
                pause = min(pause * 2, 0.2)
                continue
            except BaseException:
                conn.close()
                raise
            self._wconn = conn
            return

    def _set_up(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("SQLite refused WAL mode (got %s); reads may wait for writes", mode)
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.executescript(SCHEMA)

    async def close(self) -> None:
        """Refuse new appends, finish those queued, then close connections."""
        await self._committer.stop()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        await self.peer_bus.close()  # says goodbye while the socket is still open
        self.peer_bus.attach(None)
        if self._wakeups is not None:
            self._wakeups.close()
            self._wakeups = None
        await self._cursor.close()
        for conn in self._readers:
            with contextlib.suppress(Exception):
                await conn.close()
        self._readers.clear()
        if self._executor is not None:
            if self._wconn is not None:
                wconn = self._wconn
                self._wconn = None
                with contextlib.suppress(Exception):
                    await asyncio.get_running_loop().run_in_executor(self._executor, wconn.close)
            if self._turn_fd is not None:
                os.close(self._turn_fd)
                self._turn_fd = None
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _in_writer_thread(self, fn: Callable[[], T]) -> T:
        assert self._executor is not None, "store is not open"
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # -- writing ----------------------------------------------------------------------------

    def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_seq: int,
        idempotency: IdempotencyClaim | None = None,
    ) -> Coroutine[Any, Any, AppendResult]:
        """Check and serialise the append, queue it for the group-commit writer, await its outcome.

        Returns the group committer's coroutine itself (awaited like an ``async def``; nothing
        runs before it is awaited): no coroutine object of its own per append, each one being a
        container the cyclic collector counts while the append waits for its group.
        """
        return self._committer.submit(stream_id, events, expected_seq, idempotency)

    async def _run_job(self, run: Callable[[sqlite3.Connection], T], action: str) -> T:
        """Any other write (snapshots, imports): its own transaction in the writer's thread.

        The writer's executor has one thread, so jobs and group commits never overlap.
        """
        if not self._committer.running:
            raise StoreUnavailable("the store is closed")
        with _mapped_errors(action):
            return await self._in_writer_thread(lambda: self._transaction(run))

    def _transaction(self, run: Callable[[sqlite3.Connection], T]) -> T:
        if self._turn_fd is None:
            return self._transaction_in_turn(run)
        _take_turn(self._turn_fd)
        try:
            return self._transaction_in_turn(run)
        finally:
            fcntl.flock(self._turn_fd, fcntl.LOCK_UN)

    def _transaction_in_turn(self, run: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._wconn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = run(conn)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return result

    def _commit_group_in_thread(self, group: list[PendingAppend]) -> list[Record]:
        heads = self._heads
        try:
            records, touched, last_position = self._transaction(lambda c: _plan_and_insert(c, group, heads))
        except BaseException:
            heads.clear()  # the transaction rolled back: what it planned never happened
            raise
        heads.committed(touched, last_position)
        return records

    async def _commit_group(self, group: list[PendingAppend]) -> None:
        with _mapped_errors("write"):
            records = await self._in_writer_thread(lambda: self._commit_group_in_thread(group))
        await self._publish(records)

    async def _publish(self, records: list[Record]) -> None:
        """Publish a commit of ours; on a shared store, through the cursor, and wake the others."""
        if not records:
            return
        if not self._shared:
            self.notifier.publish(records)
            return
        if self._wakeups is not None:
            self._wakeups.notify()
        await self._cursor.publish_local(records)

    async def import_records(self, records: Sequence[Record]) -> None:
        """Insert already-built records as they are, in one transaction (``ringlog copy``).

        They must continue the log (:func:`eventstore.events.check_continues`, checked inside
        the transaction; the schema's trigger checks positions and seqs again): otherwise
        :class:`LogCorrupted` and nothing of the batch is written.
        """
        ordered = sorted(records, key=lambda r: r.position)

        def run(conn: sqlite3.Connection) -> None:
            last_position = conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]
            check_continues(ordered, lambda stream_id: _head(conn, stream_id), last_position)
            conn.executemany(_INSERT, [record_row(r) for r in ordered])

        if ordered:  # the head cache needs no care: it is valid only at the last position it saw
            await self._run_job(run, "import")
            await self._publish(ordered)

    # -- reading ----------------------------------------------------------------------------

    def _reader(self) -> aiosqlite.Connection:
        if not self._readers:
            raise StoreUnavailable("the store is closed")
        return self._readers[next(self._next_reader) % len(self._readers)]

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with _mapped_errors("read"):
            rows = await self._reader().execute_fetchall(sql, params)
        return list(rows)

    async def read(self, stream_id: str, after_seq: int = 0, limit: int | None = None) -> list[Record]:
        """The stream's records with ``seq > after_seq``, oldest first."""
        if not is_storable_text(stream_id):
            return []
        rows = await self._fetch(
            f"SELECT {RECORD_COLUMNS} FROM events WHERE draft_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (stream_id, clamp_int64(after_seq), _sql_limit(limit)),
        )
        return [record_from_row(r) for r in rows]

    async def read_stream_bodies(self, stream_id: str, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """``(seq, body)`` of the stream's records after ``after_seq``: what a replay sends, and no more."""
        if not is_storable_text(stream_id):
            return []
        rows: list[tuple[int, bytes]] = await self._fetch(
            "SELECT seq, body FROM events WHERE draft_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (stream_id, clamp_int64(after_seq), _sql_limit(limit)),
        )
        return rows

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Record]:
        """Records with ``position > after_position``; SQLite commits in position order."""
        rows = await self._fetch(
            f"SELECT {RECORD_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
            (clamp_int64(after_position), _sql_limit(limit)),
        )
        return [record_from_row(r) for r in rows]

    async def read_bodies(self, after_position: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        """``(position, body)`` after ``after_position``: what a rebuild needs, and no more."""
        rows = await self._fetch(
            "SELECT position, body FROM events WHERE position > ? ORDER BY position LIMIT ?",
            (clamp_int64(after_position), _sql_limit(limit)),
        )
        return [(r[0], r[1]) for r in rows]

    async def head(self, stream_id: str) -> int:
        """The stream's last seq."""
        if not is_storable_text(stream_id):
            return 0
        rows = await self._fetch("SELECT MAX(seq) FROM events WHERE draft_id = ?", (stream_id,))
        return int(rows[0][0] or 0)

    async def last_position(self) -> int:
        """The log's last position."""
        rows = await self._fetch("SELECT MAX(position) FROM events")
        return int(rows[0][0] or 0)

    async def find_idempotency(self, user_id: str, key: str) -> IdempotencyRecord | None:
        """The append that first used ``(user_id, key)``."""
        if not (is_storable_text(user_id) and is_storable_text(key)):
            return None
        rows = await self._fetch(
            "SELECT idem_fp, draft_id, seq FROM events WHERE idem_user = ? AND idem_key = ?",
            (user_id, key),
        )
        if not rows:
            return None
        fp, stream_id, seq = rows[0]
        return IdempotencyRecord(user_id, key, fp, stream_id, seq)

    # -- snapshots --------------------------------------------------------------------------

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """The stored projection of a stream."""
        if not is_storable_text(stream_id):
            return None
        rows = await self._fetch("SELECT seq, state FROM snapshots WHERE draft_id = ?", (stream_id,))
        return Snapshot(stream_id, rows[0][0], bytes(rows[0][1])) if rows else None

    async def list_snapshots(self, after_stream_id: str = "", limit: int = 1000) -> list[Snapshot]:
        """Stored projections ordered by stream id."""
        check_text("stream id", after_stream_id)
        rows = await self._fetch(
            "SELECT draft_id, seq, state FROM snapshots WHERE draft_id > ? ORDER BY draft_id LIMIT ?",
            (after_stream_id, _sql_limit(limit)),
        )
        return [Snapshot(r[0], r[1], bytes(r[2])) for r in rows]

    async def save_snapshots(self, snapshots: Sequence[Snapshot], checkpoint: int) -> None:
        """Upsert projections (never to an older seq) and the checkpoint, in one transaction."""
        for snap in snapshots:
            check_text("stream id", snap.stream_id)
        rows = [(s.stream_id, s.seq, s.state) for s in snapshots]

        def run(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO snapshots (draft_id, seq, state) VALUES (?, ?, ?) "
                "ON CONFLICT (draft_id) DO UPDATE SET seq = excluded.seq, state = excluded.state "
                "WHERE excluded.seq >= snapshots.seq",
                rows,
            )
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('snapshot_checkpoint', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                (str(checkpoint),),
            )

        await self._run_job(run, "snapshot write")

    async def snapshot_checkpoint(self) -> int:
        """The checkpoint saved with the last snapshots."""
        rows = await self._fetch("SELECT value FROM meta WHERE key = 'snapshot_checkpoint'")
        return int(rows[0][0]) if rows else 0

    async def reset_snapshots(self) -> None:
        """Drop every projection and the checkpoint."""

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM snapshots")
            conn.execute("DELETE FROM meta WHERE key = 'snapshot_checkpoint'")

        await self._run_job(run, "snapshot reset")

    # -- the feed index ---------------------------------------------------------------------

    async def feed_checkpoint(self) -> int:
        """The feed index's checkpoint (0 before the first index write)."""
        rows = await self._fetch("SELECT value FROM meta WHERE key = ?", (FEED_CHECKPOINT_KEY,))
        return int(rows[0][0]) if rows else 0

    async def feed_index(self, entries: Sequence[tuple[str, int]], after: int, upto: int) -> int:
        """Add entries and move the checkpoint in one write transaction (see the Store protocol).

        The write transaction (and, on a shared file, the writers' turn lock) serialises every
        process's index writes, so the checkpoint test and the inserts see no other writer.
        """
        check_feed_entries(entries, after, upto)

        def run(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (FEED_CHECKPOINT_KEY,)).fetchone()
            current = int(row[0]) if row else 0
            fresh = feed_entries_to_add(entries, after, upto, current)
            if fresh is None:
                return current
            conn.executemany(
                "INSERT INTO feed (user_id, position) VALUES (?, ?) ON CONFLICT DO NOTHING",
                fresh,
            )
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (FEED_CHECKPOINT_KEY, str(upto)),
            )
            return upto

        return await self._run_job(run, "feed index write")

    async def feed_read(
        self, user_id: str, after_position: int, upto: int, limit: int
    ) -> list[tuple[int, bytes]]:
        """The user's entries with the events' bytes, by the ``(user_id, position)`` key."""
        if not is_storable_text(user_id):
            return []
        rows = await self._fetch(
            feed_read_query("?", "?", "?", "?"),
            (user_id, clamp_int64(after_position), clamp_int64(upto), _sql_limit(limit)),
        )
        return feed_rows(rows)

    async def reset_feed(self) -> None:
        """Drop every feed entry and the checkpoint."""

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM feed")
            conn.execute("DELETE FROM meta WHERE key = ?", (FEED_CHECKPOINT_KEY,))

        await self._run_job(run, "feed reset")


def _take_turn(fd: int) -> None:
    """Take the writers' turn lock of a shared file, or raise ``sqlite3.OperationalError``.

    Processes sharing a file take turns through this ``flock`` before ``BEGIN IMMEDIATE``.
    SQLite's own busy handler sleeps 1, 2, 5 … 100 ms between tries, so the write lock sat idle
    between two processes' group commits (docs/BENCHMARKS.md, "More than one process"); here
    the tries are at most :data:`TURN_POLL_MAX` apart. Bounded by :data:`BUSY_TIMEOUT_MS`, like
    SQLite's wait (a stopped holder gives 503, not a hang).
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.00005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError(
                    "database is locked (another process holds the writers' turn)"
                ) from None
            time.sleep(pause)
            pause = min(pause * 2, TURN_POLL_MAX)


def _sql_limit(limit: int | None) -> int:
    """A read's limit as SQLite's ``LIMIT`` takes it (-1: none); see :func:`eventstore.values.read_limit`."""
    bounded = read_limit(limit)
    return -1 if bounded is None else bounded


def _head(conn: sqlite3.Connection, stream_id: str) -> Head:
    """A stream's last (seq, hash) read in the writer's transaction."""
    row = conn.execute(
        "SELECT seq, hash FROM events WHERE draft_id = ? ORDER BY seq DESC LIMIT 1", (stream_id,)
    ).fetchone()
    return (row[0], bytes(row[1])) if row else (0, GENESIS_HASH)


class _HeadCache:
    """Each stream's last (seq, hash) as of ``position``, kept by the writer between groups.

    Reading a head costs an index lookup per stream per group; the cache saves it. It is used
    only when the log's last position still equals the one it was filled at: the log is
    append-only and positions are gap-free, so an unchanged last position means no other
    connection or process appended since. Anything else empties it.
    """

    def __init__(self, max_streams: int = HEAD_CACHE_SIZE) -> None:
        self.max_streams = max_streams
        self.position: int | None = None
        self.heads: OrderedDict[str, tuple[int, bytes]] = OrderedDict()

    def clear(self) -> None:
        self.position = None
        self.heads.clear()

    def valid_at(self, last_position: int) -> dict[str, tuple[int, bytes]]:
        """The cached heads if they are current at ``last_position``, else nothing."""
        if self.position != last_position:
            self.heads.clear()
        return self.heads

    def committed(self, touched: dict[str, tuple[int, bytes]], last_position: int) -> None:
        """Record the heads a committed transaction left."""
        heads = self.heads
        for stream_id, head in touched.items():
            heads[stream_id] = head
            heads.move_to_end(stream_id)
        while len(heads) > self.max_streams:
            heads.popitem(last=False)
        self.position = last_position


def _claims_in_log(
    conn: sqlite3.Connection, claims: list[IdempotencyClaim]
) -> dict[tuple[str, str], IdempotencyRecord]:
    """Which of these (user, key) pairs the log already holds: one query for the whole group.

    Every statement is a thread switch with the event loop (the GIL), so one lookup per claim
    would make a busy group commit wait on the loop dozens of times.
    """
    found: dict[tuple[str, str], IdempotencyRecord] = {}
    for start in range(0, len(claims), 400):
        chunk = claims[start : start + 400]
        users = sorted({c.user_id for c in chunk})
        keys = sorted({c.key for c in chunk})
        sql = (
            "SELECT idem_user, idem_key, idem_fp, draft_id, seq FROM events "
            f"WHERE idem_user IN ({','.join('?' * len(users))}) AND idem_key IN ({','.join('?' * len(keys))})"
        )
        for user, key, fp, stream_id, seq in conn.execute(sql, (*users, *keys)):
            found[(user, key)] = IdempotencyRecord(user, key, fp, stream_id, seq)
    return found


def _plan_and_insert(
    conn: sqlite3.Connection, group: list[PendingAppend], cache: _HeadCache
) -> tuple[list[Record], dict[str, Head], int]:
    """Inside the writer's transaction: check every append, insert the accepted ones.

    Returns the records written, the heads of the streams appended to and the log's last
    position, for the head cache to take once the transaction has committed.
    """
    last_position = conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]
    cached = cache.valid_at(last_position)

    def head_of(stream_id: str) -> Head:
        known = cached.get(stream_id)
        return known if known is not None else _head(conn, stream_id)

    claimed = _claims_in_log(conn, [item.claim for item in group if item.claim is not None])
    records, touched = plan_group(group, head_of, claimed, last_position)
    if records:
        _insert_records(conn, records)
        last_position = records[-1].position
    return records, touched, last_position


def _insert_records(conn: sqlite3.Connection, records: list[Record]) -> None:
    """Insert records in position order: runs of unclaimed ones with :data:`_INSERT_UNCLAIMED`,
    the others with all nine columns (one ``executemany`` per run, so the trigger still sees
    each position follow the previous one)."""
    start = 0
    while start < len(records):
        claimed = records[start].idempotency is not None
        end = start + 1
        while end < len(records) and (records[end].idempotency is not None) == claimed:
            end += 1
        run = records[start:end] if start or end < len(records) else records
        if claimed:
            conn.executemany(_INSERT, [record_row(r) for r in run])
        else:
            conn.executemany(
                _INSERT_UNCLAIMED, [(r.position, r.stream_id, r.seq, r.type, r.body, r.hash) for r in run]
            )
        start = end
