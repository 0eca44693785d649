"""The PostgreSQL backend: one log shared by several servers.

Writing
-------
Each store has one writer task that takes every pending append (of any drafts) and commits them
as one transaction on a pooled connection (group commit, as in :mod:`eventstore.sqlite`). The
transaction first row-locks the single-row counter ``log_head`` (``SELECT … FOR UPDATE``), then
reads the drafts' heads and the idempotency keys, checks ``expected_seq`` and the keys, builds
the records (seq, position, body, hash chain) and inserts them, and sends
``pg_notify('ringlog', draft_id || ':' || last_seq)`` for each draft it wrote. The counter lock
serialises writers across all nodes, so the head and key checks made under it stay true until
commit; the schema checks the rest again (:mod:`eventstore.pg_schema`).

Why global reading cannot skip
------------------------------
Event stores that take positions from a PostgreSQL sequence lose events: a sequence hands out
numbers at insert time, but transactions commit in any order, so a reader can see position 11
committed while position 10 is still in flight, move its cursor past 10, and never see it.
Sequences also leave holes after rollbacks. Here positions come from ``log_head`` instead:

1. A writer takes the counter's row lock before choosing positions, and PostgreSQL releases
   row locks only after the transaction is visible to new snapshots. The next writer therefore
   reads the counter after the previous one is visible, so positions are handed out in commit
   order: if a snapshot shows position *p* committed, every position below *p* was visible
   before *p*'s transaction even took its first position, hence is in that snapshot too.
2. The counter advances by exactly one per inserted row, inside the transaction that inserts
   it, so a rolled-back append gives its positions back: positions are 1..N, no holes.

So every snapshot sees a prefix 1..k of the log, and ``read_all(after)`` (one statement, one
snapshot) can never return a record while one with a smaller position is still to commit. The
price is that appends are serialised globally (not only per draft) while a transaction holds
the lock; group commit amortises this: one lock hold and one WAL flush per group.

Cross-node wake-up
------------------
Local appends are published to :attr:`notifier` right after commit, before ``append`` returns.
Records written by other nodes are learnt from the log itself: the store keeps the position up
to which it has published (``published_position``) and, when woken, publishes
``read_all(published_position)`` in position order. Because positions are commit-ordered and
gap-free, this one cursor gives every draft's records in seq order, each exactly once. Wake-ups
come from a dedicated ``LISTEN ringlog`` connection (a notification is only a hint: it names a
draft and seq, and one for records already published is ignored), and from a periodic check
every ``poll_interval`` seconds, which covers lost notifications and a dropped listener
connection. That connection is re-established automatically, and reconnecting also triggers a
catch-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg

from eventstore.errors import (
    LogCorrupted,
    StoreError,
    StoreUnavailable,
)
from eventstore.events import (
    GENESIS_HASH,
    IdempotencyClaim,
    IdempotencyRecord,
    NewEvent,
    Record,
)
from eventstore.groupcommit import GroupCommitter, PendingAppend, plan_group, record_row
from eventstore.notifier import Notifier
from eventstore.pg_schema import SCHEMA, SCHEMA_LOCK, SCHEMA_VERSION
from eventstore.store import AppendResult, Snapshot

log = logging.getLogger(__name__)

CHANNEL = "ringlog"
"""The LISTEN/NOTIFY channel; payloads are ``draft_id:last_seq``."""

LISTEN_APPLICATION_NAME = "ringlog-listen"
"""``application_name`` of the listener connection (operators can find it in pg_stat_activity)."""

RECORD_COLUMNS = "position, draft_id, seq, type, body, hash, idem_user, idem_key, idem_fp"

MAX_GROUP = 1000
"""Appends committed together at most."""

QUEUE_SIZE = 10_000
"""Appends waiting for the writer at most; callers beyond it wait (back-pressure)."""

FOLLOW_PAGE = 1000
"""Records read per query when catching up with other nodes' appends."""

KNOWN_HEADS = 100_000
"""Drafts whose last published seq is remembered (to ignore notifications already handled)."""

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
    asyncpg.InternalClientError,
)

_INSERT = f"""
WITH inserted AS (
    INSERT INTO events ({RECORD_COLUMNS})
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::bytea[],
                         $6::bytea[], $7::text[], $8::text[], $9::text[])
    ORDER BY 1
    RETURNING draft_id, seq
)
SELECT pg_notify('{CHANNEL}', draft_id || ':' || MAX(seq)) FROM inserted GROUP BY draft_id
"""

_HEADS = """
SELECT d.draft_id, h.seq, h.hash FROM unnest($1::text[]) AS d (draft_id)
LEFT JOIN LATERAL (
    SELECT seq, hash FROM events e WHERE e.draft_id = d.draft_id ORDER BY seq DESC LIMIT 1
) h ON TRUE
"""

_CLAIMS = """
SELECT e.idem_user, e.idem_key, e.idem_fp, e.draft_id, e.seq
FROM unnest($1::text[], $2::text[]) AS c (idem_user, idem_key)
JOIN events e ON e.idem_user = c.idem_user AND e.idem_key = c.idem_key AND e.idem_key IS NOT NULL
"""


def record_from_row(row: Sequence[Any]) -> Record:
    """Build a Record from a row selected with :data:`RECORD_COLUMNS`."""
    claim = IdempotencyClaim(row[6], row[7], row[8]) if row[7] is not None else None
    return Record(row[0], row[1], row[2], row[3], bytes(row[4]), bytes(row[5]), claim)


def _record_columns(records: Sequence[Record]) -> list[list[Any]]:
    """Column arrays for :data:`_INSERT` (unnest of one array per column)."""
    return [list(column) for column in zip(*map(record_row, records), strict=True)] if records else [[]] * 9


@contextlib.contextmanager
def _mapped_errors(action: str) -> Iterator[None]:
    """Re-raise asyncpg's and the socket's errors as :class:`StoreUnavailable`."""
    try:
        yield
    except StoreError:
        raise
    except (asyncpg.PostgresError, *CONNECTION_ERRORS) as e:
        raise StoreUnavailable(f"PostgreSQL {action} failed: {e}") from e


class PostgresStore:
    """The Store on a PostgreSQL database, safe to share between several servers.

    ``pool_size`` connections serve reads, appends and snapshots; one more connection LISTENs
    (unless ``listen`` is false). ``poll_interval`` is the period of the check that covers lost
    notifications (0 turns it off); a query without an answer after ``command_timeout``
    seconds, or a connection not made within ``connect_timeout``, raises StoreUnavailable.
    """

    def __init__(
        self,
        url: str,
        pool_size: int = 10,
        *,
        poll_interval: float = 1.0,
        connect_timeout: float = 10.0,
        command_timeout: float = 30.0,
        listen: bool = True,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.url = url
        self.pool_size = pool_size
        self.poll_interval = poll_interval
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.listen = listen
        self.notifier = Notifier()
        self._pool: asyncpg.Pool | None = None
        self._committer = GroupCommitter(
            self._commit_group,
            _append_error,
            max_group=MAX_GROUP,
            queue_size=QUEUE_SIZE,
            name="ringlog-pg-writer",
        )
        self._closing = False
        # following other nodes
        self._published_position = 0
        self._known_heads: OrderedDict[str, int] = OrderedDict()
        self._follow_lock = asyncio.Lock()
        self._follow_task: asyncio.Task[None] | None = None
        self._follow_wanted = False
        self._listener: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._listen_conn: asyncpg.Connection | None = None
        self._listening = asyncio.Event()

    @property
    def is_shared(self) -> bool:
        """Other servers may append to the same database: caches must read the log's tail."""
        return True

    @property
    def published_position(self) -> int:
        """The global position up to which committed records have been published here."""
        return self._published_position

    @property
    def listen_pid(self) -> int | None:
        """The server process id of the LISTEN connection, None while it is down."""
        conn = self._listen_conn
        if conn is None or conn.is_closed():
            return None
        return int(conn.get_server_pid())

    async def wait_listening(self, timeout: float) -> bool:
        """Wait until the LISTEN connection is up; False on timeout."""
        try:
            await asyncio.wait_for(self._listening.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- life cycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the schema (idempotent), open the pool, start the writer and the follower."""
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=min(2, self.pool_size),
                max_size=self.pool_size,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
            )
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
                if await self._schema_version(conn) != SCHEMA_VERSION:
                    await conn.execute(SCHEMA)
                self._published_position = int(
                    await conn.fetchval("SELECT COALESCE(MAX(position), 0) FROM events")
                )
        except (asyncpg.PostgresError, *CONNECTION_ERRORS) as e:
            await self.close()
            raise StoreUnavailable(f"cannot open PostgreSQL database: {e}") from e
        loop = asyncio.get_running_loop()
        self._committer.start()
        if self.listen:
            self._listener = loop.create_task(self._listen_loop(), name="ringlog-pg-listen")
        if self.poll_interval > 0:
            self._poller = loop.create_task(self._poll_loop(), name="ringlog-pg-poll")

    @staticmethod
    async def _schema_version(conn: asyncpg.Connection) -> str | None:
        if await conn.fetchval("SELECT to_regclass('meta')") is None:
            return None
        value = await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'")
        return str(value) if value is not None else None

    async def close(self) -> None:
        """Refuse new appends, finish those queued, stop following, close every connection."""
        self._closing = True
        await self._committer.stop()
        for task in (self._listener, self._poller, self._follow_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._listener = self._poller = self._follow_task = None
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):
                await self._listen_conn.close(timeout=2)
            self._listen_conn = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 5)
            except Exception:  # a connection that will not close cleanly is dropped
                pool.terminate()

    def _acquire(self) -> Any:
        if self._pool is None:
            raise StoreUnavailable("the store is closed")
        return self._pool.acquire(timeout=self.connect_timeout)

    # -- writing ----------------------------------------------------------------------------

    async def append(
        self,
        draft_id: str,
        events: Sequence[NewEvent],
        expected_seq: int,
        idempotency: IdempotencyClaim | None = None,
    ) -> AppendResult:
        """Queue an append for the group-commit writer and wait for its outcome."""
        return await self._committer.submit(draft_id, events, expected_seq, idempotency)

    async def _commit_group(self, group: list[PendingAppend]) -> None:
        try:
            records = await self._transact(group)
        except asyncpg.PostgresError as e:
            if len(group) == 1 or isinstance(e, CONNECTION_ERRORS):
                raise
            # One bad append must not sink the others: commit each on its own.
            log.warning("group append failed (%s); retrying its %d appends one by one", e, len(group))
            records = []
            for item in group:
                item.outcome = None
                try:
                    records.extend(await self._transact([item]))
                except (asyncpg.PostgresError, *CONNECTION_ERRORS) as single:
                    item.outcome = _append_error(single)
        if records:
            await self._publish_local(records)

    async def _transact(self, group: list[PendingAppend]) -> list[Record]:
        """One transaction: lock the counter, check every append, insert the accepted ones."""
        async with self._acquire() as conn, conn.transaction():
            last_position = int(await conn.fetchval("SELECT position FROM log_head FOR UPDATE"))
            drafts = sorted({item.draft_id for item in group})
            heads: dict[str, tuple[int, bytes]] = {
                row[0]: (int(row[1]), bytes(row[2])) if row[1] is not None else (0, GENESIS_HASH)
                for row in await conn.fetch(_HEADS, drafts)
            }
            claims = [item.claim for item in group if item.claim is not None]
            claimed: dict[tuple[str, str], IdempotencyRecord] = {}
            if claims:
                rows = await conn.fetch(_CLAIMS, [c.user_id for c in claims], [c.key for c in claims])
                for row in rows:
                    claimed[(row[0], row[1])] = IdempotencyRecord(row[0], row[1], row[2], row[3], row[4])
            records, _ = plan_group(group, lambda d: heads.get(d, (0, GENESIS_HASH)), claimed, last_position)
            if records:
                await conn.execute(_INSERT, *_record_columns(records))
            return records

    # -- publishing (local commits and other nodes' commits) ---------------------------------

    async def _publish_local(self, records: list[Record]) -> None:
        """Publish a commit of ours, after any earlier commits of other nodes not yet published."""
        records.sort(key=lambda r: r.position)
        if records[0].position > self._published_position + 1:
            try:
                await self._catch_up()
            except StoreError:
                log.warning("could not read other nodes' records before publishing ours", exc_info=True)
                self._schedule_catch_up()
                return
        self._deliver(records)

    def _deliver(self, records: Sequence[Record]) -> None:
        """Publish records not yet published, keeping the position cursor contiguous.

        Runs without awaiting, so the cursor check and the publish cannot interleave with
        another delivery.
        """
        fresh: list[Record] = []
        expected = self._published_position + 1
        for record in records:
            if record.position < expected:
                continue
            if record.position > expected:
                self._schedule_catch_up()  # a gap: read it from the log rather than skip it
                break
            fresh.append(record)
            expected += 1
        if not fresh:
            return
        self._published_position = fresh[-1].position
        for record in fresh:
            self._known_heads[record.draft_id] = record.seq
            self._known_heads.move_to_end(record.draft_id)
        while len(self._known_heads) > KNOWN_HEADS:
            self._known_heads.popitem(last=False)
        self.notifier.publish(fresh)

    async def _catch_up(self) -> None:
        """Publish every committed record after :attr:`published_position`, in position order."""
        async with self._follow_lock:
            while True:
                page = await self.read_all(self._published_position, FOLLOW_PAGE)
                self._deliver(page)
                if len(page) < FOLLOW_PAGE:
                    return

    def _schedule_catch_up(self) -> None:
        if self._closing:
            return
        self._follow_wanted = True
        if self._follow_task is None or self._follow_task.done():
            self._follow_task = asyncio.get_running_loop().create_task(
                self._follow(), name="ringlog-pg-follow"
            )

    async def _follow(self) -> None:
        while self._follow_wanted and not self._closing:
            self._follow_wanted = False
            try:
                await self._catch_up()
            except StoreError as e:
                log.warning("could not read the log to follow other nodes (will retry): %s", e)
                return

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        draft_id, _, seq = payload.rpartition(":")
        try:
            if self._known_heads.get(draft_id, 0) >= int(seq):
                return  # our own commit, or one already read from the log
        except ValueError:
            log.warning("ignoring malformed notification %r", payload)
        self._schedule_catch_up()

    async def _listen_loop(self) -> None:
        """Keep a LISTEN connection open; reconnect with back-off when it drops."""
        backoff = 0.1
        while not self._closing:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self.url,
                    timeout=self.connect_timeout,
                    server_settings={"application_name": LISTEN_APPLICATION_NAME},
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, ev=lost: ev.set())
                await conn.add_listener(CHANNEL, self._on_notification)
                self._listen_conn = conn
                self._listening.set()
                backoff = 0.1
                self._schedule_catch_up()  # whatever was committed while we were not listening
                await self._watch(conn, lost)
                log.warning("LISTEN connection lost; reconnecting")
            except (asyncpg.PostgresError, *CONNECTION_ERRORS) as e:
                log.warning("LISTEN connection failed (%s); retrying in %.1fs", e, backoff)
            finally:
                self._listening.clear()
                self._listen_conn = None
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _watch(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Return when ``conn`` is closed, or stops answering a periodic ping."""
        interval = self.poll_interval if self.poll_interval > 0 else 5.0
        while not conn.is_closed():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), interval)
            if lost.is_set() or conn.is_closed():
                return
            await conn.execute("SELECT 1", timeout=max(interval, 5.0))

    async def _poll_loop(self) -> None:
        """The periodic check: a lost notification delays delivery by one interval at most."""
        while True:
            await asyncio.sleep(self.poll_interval)
            self._schedule_catch_up()

    # -- bulk import (used by ``ringlog copy``) ------------------------------------------------

    async def import_records(self, records: Sequence[Record]) -> None:
        """Insert already-built records as they are, in one transaction.

        They must continue the log (next positions, next seqs, valid hash chain): the schema's
        triggers refuse anything else with :class:`LogCorrupted`, and nothing of the batch is
        written.
        """
        if not records:
            return
        ordered = sorted(records, key=lambda r: r.position)
        with _mapped_errors("import"):
            try:
                async with self._acquire() as conn, conn.transaction():
                    await conn.execute("SELECT position FROM log_head FOR UPDATE")
                    await conn.execute(_INSERT, *_record_columns(ordered))
            except asyncpg.IntegrityConstraintViolationError as e:
                raise LogCorrupted(f"imported records do not continue the log: {e}") from e

    # -- reading ----------------------------------------------------------------------------

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        with _mapped_errors("read"):
            async with self._acquire() as conn:
                rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
                return rows

    async def read(self, draft_id: str, after_seq: int = 0, limit: int | None = None) -> list[Record]:
        """The draft's records with ``seq > after_seq``, oldest first."""
        rows = await self._fetch(
            f"SELECT {RECORD_COLUMNS} FROM events WHERE draft_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            draft_id,
            after_seq,
            limit,
        )
        return [record_from_row(r) for r in rows]

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Record]:
        """Records with ``position > after_position``; never skips one (see the module doc)."""
        rows = await self._fetch(
            f"SELECT {RECORD_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2",
            after_position,
            limit,
        )
        return [record_from_row(r) for r in rows]

    async def head(self, draft_id: str) -> int:
        """The draft's last seq."""
        rows = await self._fetch("SELECT COALESCE(MAX(seq), 0) FROM events WHERE draft_id = $1", draft_id)
        return int(rows[0][0])

    async def last_position(self) -> int:
        """The log's last position."""
        rows = await self._fetch("SELECT COALESCE(MAX(position), 0) FROM events")
        return int(rows[0][0])

    async def find_idempotency(self, user_id: str, key: str) -> IdempotencyRecord | None:
        """The append that first used ``(user_id, key)``."""
        rows = await self._fetch(
            "SELECT idem_fp, draft_id, seq FROM events "
            "WHERE idem_user = $1 AND idem_key = $2 AND idem_key IS NOT NULL",
            user_id,
            key,
        )
        if not rows:
            return None
        fp, draft_id, seq = rows[0]
        return IdempotencyRecord(user_id, key, fp, draft_id, int(seq))

    # -- snapshots --------------------------------------------------------------------------

    async def load_snapshot(self, draft_id: str) -> Snapshot | None:
        """The stored projection of a draft."""
        rows = await self._fetch("SELECT seq, state FROM snapshots WHERE draft_id = $1", draft_id)
        return Snapshot(draft_id, int(rows[0][0]), bytes(rows[0][1])) if rows else None

    async def list_snapshots(self, after_draft_id: str = "", limit: int = 1000) -> list[Snapshot]:
        """Stored projections ordered by draft id (byte order, like SQLite)."""
        rows = await self._fetch(
            'SELECT draft_id, seq, state FROM snapshots WHERE draft_id > $1 COLLATE "C" '
            'ORDER BY draft_id COLLATE "C" LIMIT $2',
            after_draft_id,
            limit,
        )
        return [Snapshot(r[0], int(r[1]), bytes(r[2])) for r in rows]

    async def save_snapshots(self, snapshots: Sequence[Snapshot], checkpoint: int) -> None:
        """Upsert projections (never to an older seq) and the checkpoint, in one transaction."""
        with _mapped_errors("snapshot write"):
            async with self._acquire() as conn, conn.transaction():
                if snapshots:
                    # rows are locked in draft order: two nodes flushing the same drafts (each in
                    # its own set order) would otherwise deadlock
                    await conn.execute(
                        "INSERT INTO snapshots (draft_id, seq, state) "
                        "SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[]) ORDER BY 1 "
                        "ON CONFLICT (draft_id) DO UPDATE SET seq = excluded.seq, state = excluded.state "
                        "WHERE excluded.seq >= snapshots.seq",
                        [s.draft_id for s in snapshots],
                        [s.seq for s in snapshots],
                        [s.state for s in snapshots],
                    )
                await conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('snapshot_checkpoint', $1) "
                    "ON CONFLICT (key) DO UPDATE "
                    "SET value = GREATEST(meta.value::bigint, excluded.value::bigint)::text",
                    str(checkpoint),
                )

    async def snapshot_checkpoint(self) -> int:
        """The checkpoint saved with the last snapshots."""
        rows = await self._fetch("SELECT value FROM meta WHERE key = 'snapshot_checkpoint'")
        return int(rows[0][0]) if rows else 0

    async def reset_snapshots(self) -> None:
        """Drop every projection and the checkpoint."""
        with _mapped_errors("snapshot reset"):
            async with self._acquire() as conn, conn.transaction():
                await conn.execute("DELETE FROM snapshots")
                await conn.execute("DELETE FROM meta WHERE key = 'snapshot_checkpoint'")


def _append_error(e: BaseException) -> StoreError:
    return e if isinstance(e, StoreError) else StoreUnavailable(f"PostgreSQL append failed: {e}")
