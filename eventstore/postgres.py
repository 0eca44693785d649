"""The PostgreSQL backend: one log shared by several servers.

Writing
-------
Each store has one writer task that takes every pending append (of any streams) and commits them
together (group commit, as in :mod:`eventstore.sqlite`). The group's transaction is ONE statement,
``SELECT * FROM ringlog_append_group(…)`` (:mod:`eventstore.pg_schema`), sent outside any explicit
transaction so that PostgreSQL commits it when it returns: the function row-locks the
single-row counter ``log_head``, then, append by append and in queue order, checks the
idempotency key and ``expected_seq`` against what is committed (and what the group accepted
before), and inserts the accepted events with their positions, seqs and chain hashes in one
statement, which the schema's trigger checks once. The
counter lock serialises writers across all nodes, and it is held for the function's work and the
commit only, never across a round trip to this process (measured: with the transaction driven
from here, the lock holder spent most of its time waiting for this process's busy event loop).
After the commit, a commit hint (``pg_notify('ringlog', ':' || last_position)``) is sent in its own
short transaction (:meth:`PostgresStore._send_hints`), one per batch of groups.

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
price is that appends are serialised globally (not only per stream) while a transaction holds
the lock; group commit amortises this: one lock hold and one WAL flush per group.

Commit discovery (how a node learns of other nodes' commits)
------------------------------------------------------------
Local appends are published to :attr:`notifier` right after commit, before ``append`` returns,
after the other nodes' records that precede them: the append call returns those (read under the
counter lock, from ``published_position`` on, :data:`CATCH_UP_ROWS` at most), and only a longer
run of them is read from the log first.
Records written by other nodes are *discovered* from the log itself: the store keeps the
position up to which it has published (``published_position``) and, when woken, publishes
``read_all(published_position)`` in position order. Because positions are commit-ordered and
gap-free, this one cursor gives every stream's records in seq order, each exactly once. Wake-ups
come from a dedicated ``LISTEN ringlog`` connection (a notification is only a hint: it names a
position, and one at or below ``published_position`` is ignored), and from a periodic check
every ``poll_interval`` seconds, which covers lost notifications and a dropped listener
connection. That connection is re-established automatically, and reconnecting also triggers a
discovery. (Commit discovery is the store's own mechanism; the projector's replay of the log
and a socket's replay of a stream are other things, named in their own modules.)

Errors
------
Driver and socket errors are mapped to the store's errors in one place, :func:`_store_error`
(used through :func:`_mapped_errors`), with the same meanings as on SQLite. The stream id is
stored in the column ``draft_id`` (see :mod:`eventstore.sql`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg

from eventstore.errors import (
    ConcurrencyConflict,
    IdempotencyKeyReused,
    LogCorrupted,
    StoreError,
    StoreLocked,
    StoreUnavailable,
    UnrepresentableValue,
)
from eventstore.events import (
    GENESIS_HASH,
    AppendResult,
    IdempotencyClaim,
    IdempotencyRecord,
    NewEvent,
    Record,
    Snapshot,
    canonical_json,
    chain_hash,
    check_continues,
    check_feed_entries,
)
from eventstore.groupcommit import GroupCommitter, PendingAppend
from eventstore.notifier import Notifier
from eventstore.ownership import OWNER_LOCK, redact_url
from eventstore.peerbus import PeerBus
from eventstore.pg_peerbus import BUS_CHANNEL, BUS_NOTIFY, NotifyOutbox, frame_listener
from eventstore.pg_schema import FEED_SCHEMA, SCHEMA, SCHEMA_LOCK, SCHEMA_VERSION
from eventstore.sql import (
    FEED_CHECKPOINT_KEY,
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

CHANNEL = "ringlog"
"""The LISTEN/NOTIFY channel of commit hints; payloads are ``:last_position`` (see :data:`_NOTIFY`)."""

SNAPSHOT_LEAD_LOCK = 0x72696E67736E6170
"""Session advisory lock held on its LISTEN connection by the node that saves every draft's
snapshot and moves the snapshot checkpoint (docs/POSTGRES.md "Snapshots are saved by one node")."""

LISTEN_APPLICATION_NAME = "ringlog-listen"
"""``application_name`` of the listener connection (operators can find it in pg_stat_activity)."""

DISCOVERY_PAGE = 1000
"""Records read per query by commit discovery."""

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
INSERT INTO events ({RECORD_COLUMNS})
SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::bytea[],
                     $6::bytea[], $7::text[], $8::text[], $9::text[])
ORDER BY 1
"""
"""A bulk import's insert (``ringlog copy``); the schema's trigger checks every row."""

_APPEND = "SELECT * FROM ringlog_append($1, $2, $3, $4, $5, $6, $7, $8, $9)"
"""The whole append transaction, as one statement run outside any explicit transaction (see
:data:`eventstore.pg_schema.SCHEMA`, ``ringlog_append``): PostgreSQL commits it as soon as it
ends, so the counter lock is held for the function's own work and the commit, never while a
round trip to this process waits for its event loop. (Schema version 2; what nodes of that
version call.)"""

_APPEND_AFTER = "SELECT * FROM ringlog_append_after($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
""":data:`_APPEND` with the caller's read cursor and a row bound in front (schema version 3):
the rows start with the records committed after the cursor and before the group (outcome
``committed``, read under the counter lock), then one outcome row per append."""

_APPEND_GROUP = "SELECT * FROM ringlog_append_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
""":data:`_APPEND_AFTER`'s arguments and answer, decided the same way, with one statement for the
group's heads, one for its keys and one insert for its events (schema version 4; what this
version calls)."""

MIGRATION_LOCK_TIMEOUT_MS = 10_000
"""How long opening a database of an older schema waits for the table locks its migration needs
(``lock_timeout``) before the open fails, rather than stalling every node's queries behind it."""

CATCH_UP_ROWS = 256
"""Records of other nodes an append brings back at most (:data:`_APPEND_GROUP`); past that, the
rest are read by commit discovery before the group is published, as before version 3."""

_NOTIFY = f"SELECT pg_notify('{CHANNEL}', ':' || $1::bigint)"
"""A commit hint: the last position committed here, sent after the commit in its own short
transaction. One notification per batch, whatever the number of streams: every node, this one
included, hears each. The empty name before the colon is for nodes of schema version 2, which
read ``stream_id:last_seq`` hints and, knowing no stream named ``""``, read the log on it."""

POSITION_PROBES = (10**18, 2 * 10**18)
"""Two 19-digit positions an event whose body holds its position is encoded with: the bodies
differ exactly where the position goes, which splits the body into prefix and suffix."""


def _split_at_position(stream_id: str, new: NewEvent, seq: int) -> tuple[bytes, bytes]:
    """``(prefix, suffix)`` with ``body == prefix + str(position).encode() + suffix`` for any position.

    The database writes the position in when it assigns it, under the counter lock. Raises
    :class:`UnrepresentableValue` if the data cannot be encoded.
    """
    try:
        a, b = (canonical_json(new.materialise(stream_id, seq, probe)) for probe in POSITION_PROBES)
    except (TypeError, ValueError) as e:
        raise UnrepresentableValue("event data", str(e)) from e
    at = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
    width = len(str(POSITION_PROBES[0]))
    return a[:at], a[at + width :]


def _append_arguments(group: Sequence[PendingAppend]) -> list[list[Any]]:
    """The nine arrays ``ringlog_append`` takes: six per append, three per event."""
    per_append: list[list[Any]] = [[], [], [], [], [], []]
    types: list[str] = []
    prefixes: list[bytes] = []
    suffixes: list[bytes | None] = []
    for item in group:
        c = item.claim
        for column, value in zip(
            per_append,
            (item.stream_id, item.expected_seq, c and c.user_id, c and c.key, c and c.fingerprint,
             len(item.events)),
            strict=True,
        ):  # fmt: skip
            column.append(value)
        for offset, (new, body) in enumerate(zip(item.events, item.bodies, strict=True), start=1):
            types.append(new.type)
            if new.position_path:
                prefix, suffix = _split_at_position(item.stream_id, new, item.expected_seq + offset)
                prefixes.append(prefix)
                suffixes.append(suffix)
            else:
                prefixes.append(body)
                suffixes.append(None)
    return [*per_append, types, prefixes, suffixes]


def _records_as_stored(
    item: PendingAppend,
    head_seq: int,
    last_position: int,
    prev_hash: bytes,
    prefixes: Sequence[bytes],
    suffixes: Sequence[bytes | None],
) -> list[Record]:
    """The records ``ringlog_append`` stored for one accepted append, from the arguments it got.

    Positions end at ``last_position``; each body is its prefix, or prefix ‖ position ‖ suffix;
    hashes chain from ``prev_hash`` (:func:`eventstore.events.chain_hash`), as the function did.
    """
    records: list[Record] = []
    first = last_position - len(item.events)
    for offset, (new, prefix, suffix) in enumerate(
        zip(item.events, prefixes, suffixes, strict=True), start=1
    ):
        position = first + offset
        body = prefix if suffix is None else prefix + str(position).encode() + suffix
        prev_hash = chain_hash(prev_hash, position, body)
        records.append(
            Record(
                position=position,
                stream_id=item.stream_id,
                seq=head_seq + offset,
                type=new.type,
                body=body,
                hash=prev_hash,
                idempotency=item.claim if offset == 1 else None,
            )
        )
    return records


_HEADS = """
SELECT d.draft_id, h.seq, h.hash FROM unnest($1::text[]) AS d (draft_id)
LEFT JOIN LATERAL (
    SELECT seq, hash FROM events e WHERE e.draft_id = d.draft_id ORDER BY seq DESC LIMIT 1
) h ON TRUE
"""


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """What a pooled connection needs before its next use: only an unfinished transaction ended.

    asyncpg's default reset (``RESET ALL``, ``UNLISTEN *``, advisory unlock, ``CLOSE ALL``) is
    one more round trip and statement on every release; the store sets no session state (LISTEN
    runs on its own connection, locks are transaction-scoped), so there is nothing else to undo.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def _record_columns(records: Sequence[Record]) -> list[list[Any]]:
    """Column arrays for :data:`_INSERT` (unnest of one array per column)."""
    return [list(column) for column in zip(*map(record_row, records), strict=True)] if records else [[]] * 9


def _store_error(e: BaseException, action: str) -> StoreError | None:
    """THE mapping of asyncpg's and the socket's errors to the store's (None: not a storage error).

    Same meanings as :func:`eventstore.sqlite._store_error`: an integrity constraint (the
    schema's triggers, UNIQUE) refusing a write is :class:`LogCorrupted`; a data exception
    (SQLSTATE class 22: NUL in text, invalid UTF-8, a number out of range, an argument the
    driver cannot encode) is :class:`UnrepresentableValue`; connection loss, timeouts and every
    other server error are :class:`StoreUnavailable`. Messages carry ``repr`` of the driver's
    text, so no raw byte of a value reaches a log line.
    """
    if isinstance(e, StoreError):
        return e
    if isinstance(e, asyncpg.IntegrityConstraintViolationError):
        return LogCorrupted(f"the log's schema refused the {action}: {str(e)!r}")
    if isinstance(e, asyncpg.DataError | UnicodeEncodeError | OverflowError):
        return UnrepresentableValue(
            f"a value of the {action}", f"PostgreSQL cannot store it ({e.__class__.__name__})"
        )
    if isinstance(e, (asyncpg.PostgresError, *CONNECTION_ERRORS)):
        return StoreUnavailable(f"PostgreSQL {action} failed: {str(e) or type(e).__name__!r}")
    return None


def _mapped_errors(action: str) -> contextlib.AbstractContextManager[None]:
    """Re-raise a lower-layer error as the store's (:func:`_store_error`), ``from`` the original."""
    return mapped_errors(_store_error, action)


class _OwnerRefused(Exception):
    """An offline writing tool holds the owner lock: drop this LISTEN connection."""


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
        serving: bool = False,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.url = url
        self.pool_size = pool_size
        self.poll_interval = poll_interval
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.listen = listen
        self.serving = serving and listen
        """Hold :data:`~eventstore.ownership.OWNER_LOCK` shared on the LISTEN connection, and
        refuse to open while an offline writing tool holds it (what ``ringlog serve`` opens)."""
        self._first_listen: asyncio.Future[StoreError | None] | None = None
        self.notifier = Notifier()
        self._pool: asyncpg.Pool | None = None
        self._committer = GroupCommitter(
            self._commit_group,
            max_group=MAX_GROUP,
            queue_size=QUEUE_SIZE,
            name="ringlog-pg-writer",
        )
        self._closing = False
        # commit discovery (other nodes' commits)
        self._published_position = 0
        self._discovery_lock = asyncio.Lock()
        self._discovery_task: asyncio.Task[None] | None = None
        self._discovery_wanted = False
        self._appending = False
        """True while this node's append call is in flight: it brings back what other nodes
        committed before it took the counter lock, so a hint heard meanwhile waits for it."""
        self._hint_while_appending = 0
        """The highest hinted position heard while :attr:`_appending` (0: none)."""
        self._listener: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._listen_conn: asyncpg.Connection | None = None
        self._listening = asyncio.Event()
        self._snapshot_leader = False
        self._hint_position = 0
        """The last position committed here that other nodes are to hear of."""
        self._hinted_position = 0
        self._hint_task: asyncio.Task[None] | None = None
        self.peer_bus = PeerBus()
        """The peer bus (:mod:`eventstore.peerbus`), over :data:`eventstore.pg_peerbus.BUS_CHANNEL`."""
        self._bus_outbox = NotifyOutbox(self._notify_bus)

    @property
    def is_shared(self) -> bool:
        """Other servers may append to the same database: caches must read the log's tail."""
        return True

    @property
    def snapshot_leader(self) -> bool:
        """True while this node's LISTEN connection holds :data:`SNAPSHOT_LEAD_LOCK` (tried at each
        connect and each ping, so a lead freed by a dead node is taken within ``poll_interval``).
        A store opened with ``listen=False`` (tests, tools) always leads, as one process would."""
        return self._snapshot_leader or not self.listen

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
        """Create the schema (idempotent), open the pool, start the writer and commit discovery."""
        try:
            with _mapped_errors("open"):
                await self._open_pool()
        except StoreError:
            await self.close()
            raise
        loop = asyncio.get_running_loop()
        self._committer.start()
        if self.listen:
            self._first_listen = loop.create_future()
            self.peer_bus.attach(self._bus_outbox.send)
            self._listener = loop.create_task(self._listen_loop(), name="ringlog-pg-listen")
        if self.poll_interval > 0:
            self._poller = loop.create_task(self._poll_loop(), name="ringlog-pg-poll")
        if self.serving and self._first_listen is not None:
            await self._await_owner_share()

    async def _await_owner_share(self) -> None:
        """Wait for the first LISTEN connection to take the shared owner lock.

        Raises StoreLocked (after closing) while an offline writing tool holds it exclusively,
        StoreUnavailable if no LISTEN connection is made within ``connect_timeout`` +
        ``command_timeout`` seconds.
        """
        assert self._first_listen is not None
        try:
            refused = await asyncio.wait_for(
                asyncio.shield(self._first_listen), self.connect_timeout + self.command_timeout
            )
        except TimeoutError:
            refused = StoreUnavailable(
                "the LISTEN connection (which holds the servers' shared lock) was not made"
            )
        if refused is not None:
            await self.close()
            raise refused

    async def _open_pool(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.url,
            min_size=min(2, self.pool_size),
            max_size=self.pool_size,
            timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            reset=_reset_connection,
        )
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
            if await self._schema_version(conn) != SCHEMA_VERSION:
                # Replacing a trigger locks `events` exclusively: waiting behind a long reader
                # would queue every node's queries on it, so give up (StoreUnavailable) instead.
                await conn.execute(f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT_MS}ms'")
                await conn.execute(SCHEMA)
            await conn.execute(FEED_SCHEMA)
            self._published_position = int(
                await conn.fetchval("SELECT COALESCE(MAX(position), 0) FROM events")
            )

    @staticmethod
    async def _schema_version(conn: asyncpg.Connection) -> str | None:
        if await conn.fetchval("SELECT to_regclass('meta')") is None:
            return None
        value = await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'")
        return str(value) if value is not None else None

    async def close(self) -> None:
        """Refuse new appends, finish those queued, stop commit discovery, close every connection."""
        self._closing = True
        await self.peer_bus.close()  # its goodbye goes out before the pool closes
        await self._bus_outbox.close()
        await self._committer.stop()
        if self._hint_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._hint_task, 2)
        for task in (self._listener, self._poller, self._discovery_task, self._hint_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._listener = self._poller = self._discovery_task = self._hint_task = None
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
        stream_id: str,
        events: Sequence[NewEvent],
        expected_seq: int,
        idempotency: IdempotencyClaim | None = None,
    ) -> AppendResult:
        """Check and serialise the append, queue it for the group-commit writer, await its outcome."""
        return await self._committer.submit(stream_id, events, expected_seq, idempotency)

    async def _commit_group(self, group: list[PendingAppend]) -> None:
        """One group's transaction (a failure is retried append by append by the committer).

        Other nodes' records committed since :attr:`published_position` come back with the
        outcomes (up to :data:`CATCH_UP_ROWS`) and are published first, so publishing the group
        needs no read of its own in the usual case (docs/POSTGRES.md "The append returns what
        the node missed"). Commit hints heard while the call is in flight are read only after it,
        and only what its answer did not cover (docs/POSTGRES.md "Cross-node wake-up").
        """
        self._appending = True
        try:
            with _mapped_errors("write"):
                records, earlier = await self._transact(group)
        except BaseException:
            self._appending = False
            self._read_deferred_hint()
            raise
        self._appending = False
        if earlier:
            self._deliver(earlier)
        if records:
            self._send_hints(records)
            await self._publish_local(records)
        self._read_deferred_hint()

    def _read_deferred_hint(self) -> None:
        """Commit discovery for a hint heard during our append, if the append's answer did not
        cover it (that node committed after our call took the counter lock)."""
        if self._hint_while_appending > self._published_position:
            self._schedule_discovery()
        self._hint_while_appending = 0

    def _send_hints(self, records: Sequence[Record]) -> None:
        """Queue commit hints for other nodes; one task sends them, after the commit, batched.

        NOTIFY inside the append transaction would take PostgreSQL's database-wide notification
        queue lock at commit and hold it through the WAL flush (and with it the counter lock a
        little longer); sent afterwards, in its own transaction, it serialises nothing but itself.
        A hint lost because this process dies right after the commit delays other nodes by one
        ``poll_interval`` at most (their periodic check reads the log). A hint is one position,
        so one notification covers every group committed while the previous one was being sent.
        """
        self._hint_position = max(self._hint_position, max(r.position for r in records))
        if self._hint_task is None or self._hint_task.done():
            self._hint_task = asyncio.get_running_loop().create_task(
                self._hint_loop(), name="ringlog-pg-notify"
            )

    async def _hint_loop(self) -> None:
        while self._hint_position > self._hinted_position and self._pool is not None:
            position = self._hinted_position = self._hint_position
            try:
                with _mapped_errors("notify"):
                    async with self._acquire() as conn:
                        await conn.execute(_NOTIFY, position)
            except StoreError as e:  # other nodes' periodic check finds the records anyway
                log.warning("could not send the commit hint for position %d: %r", position, str(e))

    async def _notify_bus(self, frames: list[str]) -> None:
        with _mapped_errors("peer bus notify"):
            async with self._acquire() as conn:
                await conn.execute(BUS_NOTIFY, frames)

    async def _heads(
        self, conn: asyncpg.Connection, stream_ids: Sequence[str]
    ) -> dict[str, tuple[int, bytes]]:
        """The last (seq, hash) of each stream, (0, genesis) for a new one: one query."""
        return {
            row[0]: (int(row[1]), bytes(row[2])) if row[1] is not None else (0, GENESIS_HASH)
            for row in await conn.fetch(_HEADS, sorted(set(stream_ids)))
        }

    async def _transact(self, group: list[PendingAppend]) -> tuple[list[Record], list[Record]]:
        """One statement, one round trip: :data:`eventstore.pg_schema` ``ringlog_append_group``
        locks the counter, reads the records committed after :attr:`published_position`, decides
        every append of the group, inserts the accepted ones and commits.

        Returns the group's records (position order) and those earlier records not published
        here meanwhile (at most :data:`CATCH_UP_ROWS`, position order, contiguous).

        The decisions (:func:`plan_group`'s rules: key replay or reuse, ``expected_seq`` against
        the head, appends later in the group seeing earlier ones) are made by the function under
        the counter lock; here the outcomes become the callers' results. The records are rebuilt
        from the very bytes sent (never by encoding the events again, which could fail or differ
        after the commit) and checked against the hash chain the database stored.
        """
        args = _append_arguments(group)
        prefixes, suffixes = args[7], args[8]
        async with self._acquire() as conn:
            rows = await conn.fetch(_APPEND_GROUP, self._published_position, CATCH_UP_ROWS, *args)
        n_earlier = next((i for i, row in enumerate(rows) if row[0] != "committed"), len(rows))
        # Commit discovery (a hint heard meanwhile) may have published some of them already.
        earlier = [record_from_row(row[7:]) for row in rows[:n_earlier] if row[7] > self._published_position]
        records: list[Record] = []
        k = 0  # the index of the item's first event in the per-event arrays
        for item, row in zip(group, rows[n_earlier:], strict=True):
            outcome, head_seq, head_hash, last_position, last_hash, found_stream, found_seq = row[:7]
            claim = item.claim
            if outcome in ("replay", "reused"):
                assert claim is not None
                item.outcome = (
                    AppendResult(
                        records=(),
                        replayed=IdempotencyRecord(
                            claim.user_id, claim.key, claim.fingerprint, found_stream, int(found_seq)
                        ),
                    )
                    if outcome == "replay"
                    else IdempotencyKeyReused(claim.user_id, claim.key)
                )
            elif outcome == "conflict":
                item.outcome = ConcurrencyConflict(item.stream_id, item.expected_seq, int(head_seq))
            elif not item.events:
                item.outcome = AppendResult(records=())
            else:
                built = _records_as_stored(
                    item,
                    int(head_seq),
                    int(last_position),
                    bytes(head_hash),
                    prefixes[k : k + len(item.events)],
                    suffixes[k : k + len(item.events)],
                )
                if built[-1].hash != bytes(last_hash):
                    raise LogCorrupted(
                        f"stream {item.stream_id!r} seq {built[-1].seq}: the database's hash chain "
                        "differs from the one computed here"
                    )
                records.extend(built)
                item.outcome = AppendResult(records=tuple(built))
            k += len(item.events)
        return records, earlier

    # -- publishing (local commits, and other nodes' commits found by commit discovery) -------

    async def _publish_local(self, records: list[Record]) -> None:
        """Publish a commit of ours, after any earlier commits of other nodes not yet published
        (read from the log here only if the append call did not bring them all back)."""
        records.sort(key=lambda r: r.position)
        if records[0].position > self._published_position + 1:
            try:
                await self._discover_commits(before=records[0].position)
            except StoreError as e:
                log.warning("could not read other nodes' records before publishing ours: %r", str(e))
                self._schedule_discovery()
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
                self._schedule_discovery()  # a gap: read it from the log rather than skip it
                break
            fresh.append(record)
            expected += 1
        if not fresh:
            return
        self._published_position = fresh[-1].position
        self.notifier.publish(fresh)

    async def _discover_commits(self, before: int | None = None) -> None:
        """Commit discovery: publish every committed record after :attr:`published_position`, in
        position order (only those below ``before`` when given: a commit of ours starts there)."""
        async with self._discovery_lock:
            while True:
                limit = DISCOVERY_PAGE
                if before is not None:
                    limit = min(limit, before - 1 - self._published_position)
                    if limit <= 0:
                        return
                page = await self.read_all(self._published_position, limit)
                self._deliver(page)
                if len(page) < limit:
                    return

    def _schedule_discovery(self) -> None:
        if self._closing:
            return
        self._discovery_wanted = True
        if self._discovery_task is None or self._discovery_task.done():
            self._discovery_task = asyncio.get_running_loop().create_task(
                self._discovery_loop(), name="ringlog-pg-discover"
            )

    async def _discovery_loop(self) -> None:
        while self._discovery_wanted and not self._closing:
            self._discovery_wanted = False
            try:
                await self._discover_commits()
            except StoreError as e:  # the periodic check runs it again
                log.warning("commit discovery could not read the log (will retry): %r", str(e))
                return

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        """A commit hint: read the log unless its position is published here already.

        ``:position`` from this version; anything else (a version-2 node's ``stream_id:seq``, a
        malformed payload) reads the log, which costs a query and is always correct.
        """
        if payload.startswith(":"):
            try:
                position = int(payload[1:])
            except ValueError:
                log.warning("malformed commit hint %r", payload)
            else:
                if position <= self._published_position:
                    return  # our own commit, or one already read from the log
                if self._appending:
                    # Our append in flight returns every record committed before it took the
                    # counter lock; whatever it does not cover is read once it has returned.
                    self._hint_while_appending = max(self._hint_while_appending, position)
                    return
        self._schedule_discovery()

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
                await conn.add_listener(BUS_CHANNEL, frame_listener(self.peer_bus.receive))
                if self.serving and not await self._take_owner_share(conn):
                    raise _OwnerRefused  # the finally drops the connection; retried after the back-off
                self._listen_conn = conn
                await self._try_lead(conn)
                self._listening.set()
                if self._first_listen is not None and not self._first_listen.done():
                    self._first_listen.set_result(None)
                self.peer_bus.start()  # or, listening again, a hello: peers re-announce their state
                backoff = 0.1
                self._schedule_discovery()  # whatever was committed while we were not listening
                await self._watch(conn, lost)
                log.warning("LISTEN connection lost; reconnecting")
            except _OwnerRefused:
                pass  # logged (or reported to open) by _take_owner_share
            except (asyncpg.PostgresError, *CONNECTION_ERRORS) as e:
                log.warning("LISTEN connection failed (%r); retrying in %.1fs", str(e), backoff)
            finally:
                self._listening.clear()
                self._snapshot_leader = False  # the session lock goes with the connection
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
            if self._snapshot_leader:
                await conn.execute("SELECT 1", timeout=max(interval, 5.0))
            else:
                await self._try_lead(conn)  # the ping, and a try for a lead a dead node freed

    async def _take_owner_share(self, conn: asyncpg.Connection) -> bool:
        """Take :data:`~eventstore.ownership.OWNER_LOCK` shared on ``conn``; False if a tool holds it.

        At the first connect a refusal ends the listener and :meth:`open` raises StoreLocked (the
        server does not start). After a reconnect the node was already serving: it logs an error
        and retries after the back-off until the tool ends (docs/POSTGRES.md "Offline tools and
        running servers").
        """
        timeout = max(self.poll_interval, 5.0)
        if await conn.fetchval("SELECT pg_try_advisory_lock_shared($1)", OWNER_LOCK, timeout=timeout):
            return True
        first = self._first_listen
        if first is not None and not first.done():
            first.set_result(
                StoreLocked(redact_url(self.url), "an offline writing tool such as rebuild or copy")
            )
            self._closing = True  # open() closes the store: no retry
        else:
            log.error(
                "an offline writing tool (rebuild, copy --to) holds the database exclusively while "
                "this server runs; not listening until it ends"
            )
        return False

    async def _try_lead(self, conn: asyncpg.Connection) -> None:
        """Take the snapshot lead if no other node's LISTEN session holds it."""
        timeout = max(self.poll_interval, 5.0)
        got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", SNAPSHOT_LEAD_LOCK, timeout=timeout)
        self._snapshot_leader = bool(got)

    async def _poll_loop(self) -> None:
        """The periodic check: a lost notification delays delivery by one interval at most."""
        while True:
            await asyncio.sleep(self.poll_interval)
            self._schedule_discovery()

    # -- bulk import (used by ``ringlog copy``) ------------------------------------------------

    async def import_records(self, records: Sequence[Record]) -> None:
        """Insert already-built records as they are, in one transaction.

        They must continue the log (next positions, next seqs, valid hash chain):
        :func:`eventstore.events.check_continues` checks it under the counter lock, as on every
        backend, and the schema's triggers check it again; anything else is refused with
        :class:`LogCorrupted`, and nothing of the batch is written.
        """
        if not records:
            return
        ordered = sorted(records, key=lambda r: r.position)
        with _mapped_errors("import"):
            async with self._acquire() as conn, conn.transaction():
                last_position = int(await conn.fetchval("SELECT position FROM log_head FOR UPDATE"))
                heads = await self._heads(
                    conn, [r.stream_id for r in ordered if is_storable_text(r.stream_id)]
                )
                check_continues(ordered, lambda s: heads.get(s, (0, GENESIS_HASH)), last_position)
                await conn.execute(_INSERT, *_record_columns(ordered))
        self._send_hints(ordered)
        await self._publish_local(ordered)

    # -- reading ----------------------------------------------------------------------------

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        with _mapped_errors("read"):
            async with self._acquire() as conn:
                rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
                return rows

    async def read(self, stream_id: str, after_seq: int = 0, limit: int | None = None) -> list[Record]:
        """The stream's records with ``seq > after_seq``, oldest first."""
        if not is_storable_text(stream_id):
            return []
        rows = await self._fetch(
            f"SELECT {RECORD_COLUMNS} FROM events WHERE draft_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            stream_id,
            clamp_int64(after_seq),
            read_limit(limit),
        )
        return [record_from_row(r) for r in rows]

    async def read_stream_bodies(self, stream_id: str, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """``(seq, body)`` of the stream's records after ``after_seq``: what a replay sends, and no more."""
        if not is_storable_text(stream_id):
            return []
        rows = await self._fetch(
            "SELECT seq, body FROM events WHERE draft_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            stream_id,
            clamp_int64(after_seq),
            read_limit(limit),
        )
        return [(int(r[0]), bytes(r[1])) for r in rows]

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Record]:
        """Records with ``position > after_position``; never skips one (see the module doc)."""
        rows = await self._fetch(
            f"SELECT {RECORD_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2",
            clamp_int64(after_position),
            read_limit(limit),
        )
        return [record_from_row(r) for r in rows]

    async def read_bodies(self, after_position: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        """``(position, body)`` after ``after_position``: what a rebuild needs, and no more."""
        rows = await self._fetch(
            "SELECT position, body FROM events WHERE position > $1 ORDER BY position LIMIT $2",
            clamp_int64(after_position),
            read_limit(limit),
        )
        return [(int(r[0]), bytes(r[1])) for r in rows]

    async def head(self, stream_id: str) -> int:
        """The stream's last seq."""
        if not is_storable_text(stream_id):
            return 0
        rows = await self._fetch("SELECT COALESCE(MAX(seq), 0) FROM events WHERE draft_id = $1", stream_id)
        return int(rows[0][0])

    async def last_position(self) -> int:
        """The log's last position."""
        rows = await self._fetch("SELECT COALESCE(MAX(position), 0) FROM events")
        return int(rows[0][0])

    async def find_idempotency(self, user_id: str, key: str) -> IdempotencyRecord | None:
        """The append that first used ``(user_id, key)``."""
        if not (is_storable_text(user_id) and is_storable_text(key)):
            return None
        rows = await self._fetch(
            "SELECT idem_fp, draft_id, seq FROM events "
            "WHERE idem_user = $1 AND idem_key = $2 AND idem_key IS NOT NULL",
            user_id,
            key,
        )
        if not rows:
            return None
        fp, stream_id, seq = rows[0]
        return IdempotencyRecord(user_id, key, fp, stream_id, int(seq))

    # -- snapshots --------------------------------------------------------------------------

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """The stored projection of a stream."""
        if not is_storable_text(stream_id):
            return None
        rows = await self._fetch("SELECT seq, state FROM snapshots WHERE draft_id = $1", stream_id)
        return Snapshot(stream_id, int(rows[0][0]), bytes(rows[0][1])) if rows else None

    async def list_snapshots(self, after_stream_id: str = "", limit: int = 1000) -> list[Snapshot]:
        """Stored projections ordered by stream id (byte order, like SQLite)."""
        check_text("stream id", after_stream_id)
        rows = await self._fetch(
            'SELECT draft_id, seq, state FROM snapshots WHERE draft_id > $1 COLLATE "C" '
            'ORDER BY draft_id COLLATE "C" LIMIT $2',
            after_stream_id,
            read_limit(limit),
        )
        return [Snapshot(r[0], int(r[1]), bytes(r[2])) for r in rows]

    async def save_snapshots(self, snapshots: Sequence[Snapshot], checkpoint: int) -> None:
        """Upsert projections (never to an older seq) and the checkpoint, in one transaction."""
        for snap in snapshots:
            check_text("stream id", snap.stream_id)
        with _mapped_errors("snapshot write"):
            async with self._acquire() as conn, conn.transaction():
                if snapshots:
                    # rows are locked in stream order: two nodes flushing the same streams (each in
                    # its own set order) would otherwise deadlock
                    await conn.execute(
                        "INSERT INTO snapshots (draft_id, seq, state) "
                        "SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[]) ORDER BY 1 "
                        "ON CONFLICT (draft_id) DO UPDATE SET seq = excluded.seq, state = excluded.state "
                        "WHERE excluded.seq >= snapshots.seq",
                        [s.stream_id for s in snapshots],
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

    # -- the feed index ---------------------------------------------------------------------

    async def feed_checkpoint(self) -> int:
        """The feed index's checkpoint (0 before the first index write)."""
        rows = await self._fetch("SELECT value FROM meta WHERE key = $1", FEED_CHECKPOINT_KEY)
        return int(rows[0][0]) if rows else 0

    async def feed_index(self, entries: Sequence[tuple[str, int]], after: int, upto: int) -> int:
        """Add entries and move the checkpoint in one transaction (see the Store protocol).

        The checkpoint row is locked (``FOR UPDATE``) first, so index writers on every node take
        turns and each sees the checkpoint the previous one committed: one writer per position.
        """
        check_feed_entries(entries, after, upto)
        with _mapped_errors("feed index write"):
            async with self._acquire() as conn, conn.transaction():
                value = await conn.fetchval(
                    "SELECT value FROM meta WHERE key = $1 FOR UPDATE", FEED_CHECKPOINT_KEY
                )
                current = int(value) if value is not None else 0
                fresh = feed_entries_to_add(entries, after, upto, current)
                if fresh is None:
                    return current
                if fresh:
                    await conn.execute(
                        "INSERT INTO feed (user_id, position) "
                        "SELECT * FROM unnest($1::text[], $2::bigint[]) ORDER BY 1, 2 ON CONFLICT DO NOTHING",
                        [e[0] for e in fresh],
                        [e[1] for e in fresh],
                    )
                await conn.execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    FEED_CHECKPOINT_KEY,
                    str(upto),
                )
                return upto

    async def feed_read(
        self, user_id: str, after_position: int, upto: int, limit: int
    ) -> list[tuple[int, bytes]]:
        """The user's entries with the events' bytes, by the ``(user_id, position)`` key."""
        if not is_storable_text(user_id):
            return []
        rows = await self._fetch(
            feed_read_query("$1", "$2", "$3", "$4"),
            user_id,
            clamp_int64(after_position),
            clamp_int64(upto),
            read_limit(limit),
        )
        return feed_rows(rows)

    async def reset_feed(self) -> None:
        """Drop every feed entry and set the checkpoint to 0."""
        with _mapped_errors("feed reset"):
            async with self._acquire() as conn, conn.transaction():
                await conn.execute("DELETE FROM feed")
                await conn.execute("UPDATE meta SET value = '0' WHERE key = $1", FEED_CHECKPOINT_KEY)
