"""PostgreSQL-only behaviour: schema triggers, gap-free global reading under a delayed
transaction, several store instances on one database, LISTEN/NOTIFY wake-up and its fallbacks.

The Store contract itself runs on PostgreSQL through the ``store`` fixture
(test_store_contract.py); these tests cover what only a shared database can do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg
import pytest

from eventstore import LogCorrupted, Record, StoreUnavailable, postgres
from eventstore.events import GENESIS_HASH, build_records
from eventstore.postgres import LISTEN_APPLICATION_NAME, PostgresStore
from eventstore.sql import RECORD_COLUMNS
from eventstore.verify import verify_log
from tests.eventstore.helpers import append_retrying, created, segment
from tests.pgutil import temporary_database

pytestmark = pytest.mark.postgres

WAIT = 15.0
"""Upper bound on any wait in these tests (they fail, not hang, when delivery breaks)."""


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, empty database (skips with a reason when PostgreSQL is unreachable)."""
    async with temporary_database() as url:
        yield url


@pytest.fixture
async def open_stores() -> AsyncIterator[Callable[..., Any]]:
    """Open PostgresStores on demand; all are closed at the end of the test."""
    stores: list[PostgresStore] = []

    async def make(url: str, **kwargs: Any) -> PostgresStore:
        store = PostgresStore(url, **kwargs)
        await store.open()
        stores.append(store)
        return store

    yield make
    for store in reversed(stores):
        await store.close()


class Collector:
    """A notifier listener that records what it receives and wakes waiters."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._changed = asyncio.Event()

    def __call__(self, records: Sequence[Record]) -> None:
        self.records.extend(records)
        self._changed.set()

    async def wait_until(self, predicate: Callable[[list[Record]], bool], what: str) -> None:
        async def loop() -> None:
            while not predicate(self.records):
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(loop(), WAIT)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; got {len(self.records)} records") from None


def _row(r: Record) -> tuple[Any, ...]:
    return (r.position, r.stream_id, r.seq, r.type, r.body, r.hash, None, None, None)


async def _insert_raw(conn: asyncpg.Connection, records: Sequence[Record]) -> None:
    await conn.executemany(
        f"INSERT INTO events ({RECORD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        [_row(r) for r in records],
    )


# -- the schema keeps the invariants ---------------------------------------------------------


async def test_triggers_refuse_update_delete_truncate(pg_url: str, open_stores: Any) -> None:
    store = await open_stores(pg_url)
    await store.append("d", [created(), segment()], 0)
    conn = await asyncpg.connect(pg_url)
    try:
        for sql in (
            "UPDATE events SET body = 'x'::bytea WHERE seq = 1",
            "DELETE FROM events WHERE seq = 2",
            "TRUNCATE events",
            "UPDATE log_head SET position = 0",
            "DELETE FROM log_head",
            "TRUNCATE log_head",
        ):
            with pytest.raises(asyncpg.PostgresError, match="ringlog"):
                await conn.execute(sql)
    finally:
        await conn.close()
    assert [r.seq for r in await store.read("d")] == [1, 2]
    assert (await verify_log(store)).ok


@pytest.mark.parametrize("fault", ["seq-gap", "seq-repeat", "position-gap", "position-repeat", "bad-hash"])
async def test_trigger_refuses_an_insert_that_does_not_continue_the_log(
    pg_url: str, open_stores: Any, fault: str
) -> None:
    store = await open_stores(pg_url)
    first = (await store.append("d", [created()], 0)).records[0]
    head, position, prev = first.seq, first.position, first.hash
    if fault == "seq-gap":
        head += 1
    elif fault == "seq-repeat":
        head -= 1
    elif fault == "position-gap":
        position += 1
    elif fault == "position-repeat":
        position -= 1
    elif fault == "bad-hash":
        prev = GENESIS_HASH
    bad = build_records("d", [segment()], head, position, prev, None)
    conn = await asyncpg.connect(pg_url)
    try:
        with pytest.raises(asyncpg.PostgresError):
            await _insert_raw(conn, bad)
        good = build_records("d", [segment()], first.seq, first.position, first.hash, None)
        await _insert_raw(conn, good)  # the refusal left the counter where it was
    finally:
        await conn.close()
    assert (await verify_log(store)).ok
    assert await store.head("d") == 2


async def test_import_records_refuses_records_that_do_not_continue_the_log(
    pg_url: str, open_stores: Any
) -> None:
    store = await open_stores(pg_url)
    await store.append("d", [created()], 0)
    stray = build_records("e", [created()], 0, 5, GENESIS_HASH, None)
    with pytest.raises(LogCorrupted):
        await store.import_records(stray)
    assert await store.last_position() == 1


async def test_schema_creation_is_idempotent_across_nodes_starting_together(
    pg_url: str, open_stores: Any
) -> None:
    stores = await asyncio.gather(*(open_stores(pg_url) for _ in range(3)))
    await stores[0].append("d", [created()], 0)
    reopened = await open_stores(pg_url)
    assert await reopened.head("d") == 1


async def test_unreachable_database_raises_store_unavailable() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/nowhere", connect_timeout=2)
    with pytest.raises(StoreUnavailable):
        await store.open()


# -- gap-free global reading -----------------------------------------------------------------


async def test_a_delayed_transaction_is_never_skipped_by_a_global_reader(
    pg_url: str, open_stores: Any
) -> None:
    """Hold one append transaction open while others try to commit; a reader following
    ``read_all`` by position must see every record, the delayed one included, in order."""
    node_a = await open_stores(pg_url, poll_interval=0)
    node_b = await open_stores(pg_url, poll_interval=0)
    await node_a.append("before", [created()], 0)

    held = await asyncpg.connect(pg_url)
    tx = held.transaction()
    await tx.start()
    slow = build_records("slow", [created()], 0, await node_a.last_position(), GENESIS_HASH, None)
    await _insert_raw(held, slow)  # takes position 2 and keeps the counter locked

    seen: list[Record] = []
    stop = asyncio.Event()

    async def follow() -> None:
        cursor = 0
        while not stop.is_set():
            page = await node_b.read_all(cursor, 100)
            seen.extend(page)
            if page:
                cursor = page[-1].position
            else:
                await asyncio.sleep(0)  # yield; the reader spins as fast as it can on purpose

    reader = asyncio.create_task(follow())
    writers = [
        asyncio.create_task(node.append(f"fast{i}-{name}", [created()], 0))
        for i in range(10)
        for name, node in (("a", node_a), ("b", node_b))
    ]
    try:
        # Every writer node is now waiting for the counter lock behind the held transaction.
        await _wait_for_lock_waiters(pg_url, 2)
        assert not any(w.done() for w in writers)
        assert [r.position for r in seen] == [1]
        assert await node_a.last_position() == 1
    finally:
        await tx.commit()
        await held.close()
    results = await asyncio.gather(*writers)
    last = await node_a.last_position()
    assert last == 2 + len(writers)
    while not seen or seen[-1].position < last:
        await asyncio.sleep(0.01)
        assert not reader.done()
    stop.set()
    await reader

    assert [r.position for r in seen] == list(range(1, last + 1))
    assert seen[1].stream_id == "slow"
    assert sorted(r.records[0].position for r in results) == list(range(3, last + 1))
    assert (await verify_log(node_a)).ok


async def _wait_for_lock_waiters(url: str, count: int) -> None:
    """Wait until ``count`` sessions of the database are blocked on a lock."""
    conn = await asyncpg.connect(url)
    try:
        async with asyncio.timeout(WAIT):
            while True:
                waiting = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                if waiting >= count:
                    return
                await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def test_a_rolled_back_transaction_leaves_no_hole(pg_url: str, open_stores: Any) -> None:
    store = await open_stores(pg_url, poll_interval=0)
    await store.append("d", [created()], 0)
    conn = await asyncpg.connect(pg_url)
    try:
        tx = conn.transaction()
        await tx.start()
        await _insert_raw(conn, build_records("x", [created()], 0, 1, GENESIS_HASH, None))
        await tx.rollback()
    finally:
        await conn.close()
    result = await store.append("e", [created()], 0)
    assert result.records[0].position == 2
    assert (await verify_log(store)).ok


async def test_concurrent_appenders_on_two_nodes_get_seqs_1_to_n(pg_url: str, open_stores: Any) -> None:
    node_a = await open_stores(pg_url, poll_interval=0)
    node_b = await open_stores(pg_url, poll_interval=0)
    await node_a.append("shared", [created()], 0)
    per_node = 25
    seqs = await asyncio.gather(
        *(append_retrying(node, "shared", segment()) for node in (node_a, node_b) for _ in range(per_node))
    )
    n = 1 + 2 * per_node
    assert sorted(seqs) == list(range(2, n + 1))
    assert [r.seq for r in await node_b.read("shared")] == list(range(1, n + 1))
    report = await verify_log(node_b)
    assert report.ok and report.events == n


# -- cross-node wake-up ----------------------------------------------------------------------


def _positions(records: Sequence[Record]) -> list[int]:
    return [r.position for r in records]


async def test_each_node_publishes_the_others_records_once_and_in_order(
    pg_url: str, open_stores: Any
) -> None:
    # No periodic check: only LISTEN/NOTIFY can deliver here.
    node_a = await open_stores(pg_url, poll_interval=0)
    node_b = await open_stores(pg_url, poll_interval=0)
    assert await node_a.wait_listening(WAIT) and await node_b.wait_listening(WAIT)
    everything = {"a": Collector(), "b": Collector()}
    one_draft = {"a": Collector(), "b": Collector()}
    for name, node in (("a", node_a), ("b", node_b)):
        node.notifier.add_global_listener(everything[name])
        node.notifier.add_listener("d0", one_draft[name])

    drafts = [f"d{i}" for i in range(6)]
    await asyncio.gather(*(node_a.append(d, [created()], 0) for d in drafts))

    async def writer(node: PostgresStore, draft: str) -> None:
        for _ in range(10):
            await append_retrying(node, draft, segment())

    await asyncio.gather(*(writer(node, d) for d in drafts for node in (node_a, node_b)))
    total = await node_a.last_position()
    assert total == len(drafts) * 21

    for name in ("a", "b"):
        await everything[name].wait_until(lambda rs: len(rs) >= total, f"node {name} to publish everything")
        assert _positions(everything[name].records) == list(range(1, total + 1))
        await one_draft[name].wait_until(lambda rs: len(rs) >= 21, f"node {name} to publish d0")
        assert [r.seq for r in one_draft[name].records] == list(range(1, 22))
        assert {r.stream_id for r in one_draft[name].records} == {"d0"}
    # Nothing more arrives later (no duplicates from notifications handled twice).
    await node_a.append("late", [created()], 0)
    await everything["b"].wait_until(lambda rs: len(rs) >= total + 1, "the late record on node b")
    assert _positions(everything["b"].records) == list(range(1, total + 2))


async def test_a_commit_hint_is_one_position_per_batch_whatever_the_streams(
    pg_url: str, open_stores: Any
) -> None:
    """One group on 20 streams sends one hint, ``:last position`` (not one per stream)."""
    store = await open_stores(pg_url, poll_interval=0, listen=False)
    listener = await asyncpg.connect(pg_url)
    payloads: list[str] = []
    head_heard = asyncio.Event()
    streams = [f"s{i}" for i in range(20)]

    def heard(_c: Any, _pid: int, _channel: str, payload: str) -> None:
        payloads.append(payload)
        if payload == f":{len(streams)}":
            head_heard.set()

    try:
        await listener.add_listener(postgres.CHANNEL, heard)
        await asyncio.gather(*(store.append(s, [created()], 0) for s in streams))
        await asyncio.wait_for(head_heard.wait(), WAIT)
        assert all(p.startswith(":") and p[1:].isdigit() for p in payloads), payloads
        assert len(payloads) < len(streams)
    finally:
        await listener.close()


async def test_a_hint_at_or_below_the_published_position_reads_nothing(pg_url: str, open_stores: Any) -> None:
    """A hint is a position: one already published here (this node's own, or read) is ignored;
    a later one, or a version-2 node's ``stream:seq`` hint, starts commit discovery."""
    store = await open_stores(pg_url, poll_interval=0, listen=False)
    await store.append("d", [created(), segment()], 0)
    assert store.published_position == 2

    def hear(payload: str) -> bool:
        """Deliver a hint; True if it started commit discovery."""
        store._discovery_wanted = False
        store._on_notification(None, 0, postgres.CHANNEL, payload)
        return store._discovery_wanted

    assert not hear(":1")
    assert not hear(":2")
    assert hear(":3")
    assert hear("d:2")  # version 2 named a stream and seq: read the log, which is always right
    assert hear(":x")


async def test_killing_the_listen_connection_does_not_stop_delivery(pg_url: str, open_stores: Any) -> None:
    writer = await open_stores(pg_url, poll_interval=0, listen=False)
    reader = await open_stores(pg_url, poll_interval=0)  # no periodic check: reconnect must do it
    assert await reader.wait_listening(WAIT)
    got = Collector()
    reader.notifier.add_listener("d", got)
    await writer.append("d", [created()], 0)
    await got.wait_until(lambda rs: len(rs) >= 1, "delivery before the kill")

    old_pid = reader.listen_pid
    assert old_pid is not None
    admin = await asyncpg.connect(pg_url)
    try:
        assert await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND application_name = $2",
            old_pid,
            LISTEN_APPLICATION_NAME,
        )
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", old_pid)
    finally:
        await admin.close()
    # Appended while the reader is (probably) not listening: its notification is lost.
    await writer.append("d", [segment()], 1)
    await got.wait_until(lambda rs: len(rs) >= 2, "delivery of the record appended during the outage")
    assert await reader.wait_listening(WAIT)
    assert reader.listen_pid not in (None, old_pid)
    await writer.append("d", [segment(), segment()], 2)
    await got.wait_until(lambda rs: len(rs) >= 4, "delivery after reconnecting")
    assert [r.seq for r in got.records] == [1, 2, 3, 4]


async def test_the_periodic_check_covers_lost_notifications(pg_url: str, open_stores: Any) -> None:
    writer = await open_stores(pg_url, poll_interval=0, listen=False)
    reader = await open_stores(pg_url, poll_interval=0.05, listen=False)  # notifications never arrive
    got = Collector()
    reader.notifier.add_listener("d", got)
    await writer.append("d", [created(), segment()], 0)
    await writer.append("d", [segment()], 2)
    await got.wait_until(lambda rs: len(rs) >= 3, "the periodic check to deliver")
    assert [r.seq for r in got.records] == [1, 2, 3]


async def test_a_local_append_is_published_after_earlier_remote_ones(pg_url: str, open_stores: Any) -> None:
    """Node B appends after node A without having heard of A's record yet: B still publishes
    A's record first, so its listeners see seqs in order."""
    node_a = await open_stores(pg_url, poll_interval=0, listen=False)
    node_b = await open_stores(pg_url, poll_interval=0, listen=False)
    got = Collector()
    node_b.notifier.add_listener("d", got)
    await node_a.append("d", [created()], 0)
    assert got.records == []  # B has no way to know yet
    await node_b.append("d", [segment()], 1)
    assert [r.seq for r in got.records] == [1, 2]  # published before append returned


async def test_hints_heard_while_appending_are_never_lost(pg_url: str, open_stores: Any) -> None:
    """Two nodes append at once, each hearing the other's hints only (no periodic check): a hint
    that arrives while a node's own append call is in flight waits for that call, whose answer
    brings back what committed before it took the counter lock; anything later is read once the
    call returns. Every record must reach both nodes' listeners, each once and in order."""
    nodes = [await open_stores(pg_url, poll_interval=0, pool_size=4) for _ in range(2)]
    for node in nodes:
        assert await node.wait_listening(WAIT)
    got = [Collector() for _ in nodes]
    for node, collector in zip(nodes, got, strict=True):
        node.notifier.add_global_listener(collector)

    async def writer(node: PostgresStore, stream: str) -> None:
        for i in range(60):
            await node.append(stream, [segment(content=f"{stream} {i}")], i)

    await asyncio.gather(*(writer(nodes[w % 2], f"w{w}") for w in range(8)))
    total = 8 * 60
    for collector in got:
        await collector.wait_until(lambda rs: len(rs) >= total, "every record on every node")
        assert [r.position for r in collector.records] == list(range(1, total + 1))


async def test_a_hint_deferred_during_an_append_is_read_when_the_answer_did_not_cover_it(
    pg_url: str, open_stores: Any
) -> None:
    """The two halves of the rule, one at a time: a hint heard while an append call is in flight
    schedules no read; once the call has returned, a hinted position still above what was
    published (the other node committed after the call took the counter lock) is read."""
    node_a = await open_stores(pg_url, poll_interval=0, listen=False)
    node_b = await open_stores(pg_url, poll_interval=0, listen=False)
    got = Collector()
    node_a.notifier.add_global_listener(got)
    await node_b.append("b", [created()], 0)
    node_a._appending = True  # as _commit_group sets it around the call
    node_a._on_notification(None, 0, "ringlog", ":1")
    assert node_a._discovery_task is None and node_a._hint_while_appending == 1
    node_a._appending = False
    node_a._read_deferred_hint()  # what _commit_group does after publishing the answer
    await got.wait_until(lambda rs: len(rs) >= 1, "the record of the deferred hint")
    assert [r.position for r in got.records] == [1]
    assert node_a._hint_while_appending == 0


def _count_reads(monkeypatch: pytest.MonkeyPatch, store: PostgresStore) -> list[int]:
    """Spy on ``store.read_all`` (commit discovery's read): the cursors it was called with."""
    calls: list[int] = []
    read_all = store.read_all

    async def counted(after_position: int = 0, limit: int = 1000) -> list[Record]:
        calls.append(after_position)
        return await read_all(after_position, limit)

    monkeypatch.setattr(store, "read_all", counted)
    return calls


async def test_an_append_brings_back_the_records_the_node_missed(
    pg_url: str, open_stores: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node B appends after node A's commits without having heard of them: its append returns
    them (read under the counter lock), so B publishes them first with no read of its own."""
    node_a = await open_stores(pg_url, poll_interval=0, listen=False)
    node_b = await open_stores(pg_url, poll_interval=0, listen=False)
    got = Collector()
    node_b.notifier.add_global_listener(got)
    reads = _count_reads(monkeypatch, node_b)
    await node_a.append("d", [created()], 0)
    await node_a.append("e", [created(), segment()], 0)
    await node_b.append("d", [segment()], 1)
    assert [(r.stream_id, r.seq) for r in got.records] == [("d", 1), ("e", 1), ("e", 2), ("d", 2)]
    assert got.records[:3] == (await node_a.read_all())[:3]  # as stored, byte for byte
    assert reads == []
    assert node_b.published_position == 4


async def test_more_missed_records_than_an_append_brings_back_are_read_before_publishing(
    pg_url: str, open_stores: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``CATCH_UP_ROWS`` the node reads the rest from the log before publishing its own."""
    monkeypatch.setattr(postgres, "CATCH_UP_ROWS", 2)
    node_a = await open_stores(pg_url, poll_interval=0, listen=False)
    node_b = await open_stores(pg_url, poll_interval=0, listen=False)
    got = Collector()
    node_b.notifier.add_global_listener(got)
    reads = _count_reads(monkeypatch, node_b)
    await node_a.append("d", [created(), segment(), segment(), segment(), segment()], 0)
    await node_b.append("d", [segment()], 5)
    assert _positions(got.records) == list(range(1, 7))
    assert [r.seq for r in got.records] == list(range(1, 7))
    assert reads == [2]  # the two it brought back were published; the read starts after them


async def test_a_killed_pool_connection_gives_store_unavailable_not_asyncpg_errors(
    pg_url: str, open_stores: Any
) -> None:
    store = await open_stores(pg_url, poll_interval=0, listen=False, pool_size=1)
    await store.append("d", [created()], 0)
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    # Each call either works (the pool replaced the connection) or raises StoreUnavailable;
    # anything else (an asyncpg exception) propagates and fails the test.
    for call in (lambda: store.head("d"), lambda: store.append("d", [segment()], 1)):
        with contextlib.suppress(StoreUnavailable):
            await call()
    # The store recovers: later calls work.
    head = await store.head("d")
    await store.append("d", [segment()], head)
    assert (await verify_log(store)).ok


async def test_close_finishes_queued_appends(pg_url: str) -> None:
    store = PostgresStore(pg_url, poll_interval=0)
    await store.open()
    pending = [asyncio.create_task(store.append(f"d{i}", [created()], 0)) for i in range(50)]
    await asyncio.sleep(0)
    await store.close()
    results = await asyncio.gather(*pending, return_exceptions=True)
    done = [r for r in results if not isinstance(r, BaseException)]
    assert all(isinstance(r, StoreUnavailable) for r in results if isinstance(r, BaseException))
    reopened = PostgresStore(pg_url, poll_interval=0, listen=False)
    await reopened.open()
    try:
        assert await reopened.last_position() == len(done)
    finally:
        await reopened.close()


async def test_a_projector_on_another_node_sees_an_append_at_once(pg_url: str, open_stores: Any) -> None:
    from projections.runner import DraftProjector

    node_a = await open_stores(pg_url, poll_interval=0)
    node_b = await open_stores(pg_url, poll_interval=0)
    projector_b = DraftProjector(node_b, flush_interval=0)
    await projector_b.start()
    try:
        await node_a.append("d", [created("alice", "First")], 0)
        state = await projector_b.get("d")
        assert state is not None and state.seq == 1 and state.title == "First"
        await node_a.append("d", [segment("alice", "hello")], 1)
        state = await projector_b.get("d")  # the cached state is not trusted on a shared store
        assert state is not None and state.seq == 2 and [s.content for s in state.segments] == ["hello"]
        listed = await projector_b.drafts_for("alice")
        assert [(s.id, s.seq) for s in listed] == [("d", 2)]
    finally:
        await projector_b.stop()


async def test_one_idempotency_key_appends_once_across_nodes(pg_url: str, open_stores: Any) -> None:
    from eventstore import IdempotencyClaim, IdempotencyKeyReused

    node_a = await open_stores(pg_url, poll_interval=0)
    node_b = await open_stores(pg_url, poll_interval=0)
    await node_a.append("d", [created()], 0)
    claim = IdempotencyClaim("alice", "retry-1", "fp-1")
    results = await asyncio.gather(
        *(node.append("d", [segment()], 1, claim) for node in (node_a, node_b) for _ in range(5)),
        return_exceptions=True,
    )
    assert not [r for r in results if isinstance(r, BaseException)]
    written = [r for r in results if not isinstance(r, BaseException) and r.records]
    replayed = [r for r in results if not isinstance(r, BaseException) and r.replayed is not None]
    assert (len(written), len(replayed)) == (1, 9)
    assert all(r.replayed is not None and r.replayed.seq == 2 for r in replayed)
    assert await node_b.head("d") == 2
    with pytest.raises(IdempotencyKeyReused):
        await node_b.append("d", [segment()], 2, IdempotencyClaim("alice", "retry-1", "fp-other"))
