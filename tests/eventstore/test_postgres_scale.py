"""Several writers on one PostgreSQL log, committing in any order: no global reader skips.

The append transaction is one call of the schema's ``ringlog_append`` (issue 11). These tests
hold such transactions open and commit or roll them back in orders hypothesis chooses, run
several stores appending at once, open a database written by the version-1 schema, and check
every time that a reader following ``read_all`` by position sees each record exactly once, in
position order, that every stream's seqs are contiguous and that ``verify`` passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import NewEvent, Record
from eventstore.copy import copy_records
from eventstore.events import GENESIS_HASH, IdempotencyClaim, build_records
from eventstore.pg_schema import SCHEMA_VERSION
from eventstore.postgres import _APPEND, _APPEND_AFTER, PostgresStore, _append_arguments
from eventstore.sql import RECORD_COLUMNS, record_from_row, record_row
from eventstore.sqlite import SQLiteStore
from eventstore.verify import verify_log
from tests.eventstore.helpers import append_retrying, created, pending, segment
from tests.pgutil import temporary_database

pytestmark = pytest.mark.postgres

WAIT = 30.0
V1_SCHEMA = (Path(__file__).parent / "pg_schema_v1.sql").read_text()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with temporary_database() as url:
        yield url


class GlobalReader:
    """Follows ``read_all`` by position as fast as it can, the way commit discovery, the
    projector and ``copy`` do; remembers everything it was given."""

    def __init__(self, store: PostgresStore, after: int = 0) -> None:
        self.store = store
        self.cursor = after
        self.seen: list[Record] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._one_at_a_time = asyncio.Lock()  # a reader is one cursor: polls never overlap

    async def poll(self) -> None:
        async with self._one_at_a_time:
            page = await self.store.read_all(self.cursor, 500)
            self.seen.extend(page)
            if page:
                self.cursor = page[-1].position

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self.poll()
            await asyncio.sleep(0)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def finish(self, last_position: int) -> None:
        """Stop spinning, then read until ``last_position`` (bounded)."""
        self._stop.set()
        if self._task is not None:
            await self._task
        async with asyncio.timeout(WAIT):
            while self.cursor < last_position:
                await self.poll()


def check_prefix(records: list[Record], first: int, last: int) -> None:
    """Positions ``first..last`` exactly once, in order; each stream's seqs contiguous."""
    assert [r.position for r in records] == list(range(first, last + 1))
    seqs: dict[str, int] = {}
    for r in records:
        assert r.seq == seqs.get(r.stream_id, 0) + 1, (r.stream_id, r.seq)
        seqs[r.stream_id] = r.seq


# -- transactions committed out of order, while a reader polls --------------------------------

SESSION = st.fixed_dictionaries(
    {
        "stream": st.sampled_from(["shared-1", "shared-2", "own"]),
        "events": st.lists(st.sampled_from(["created", "segment"]), min_size=1, max_size=3),
        "commit": st.booleans(),
    }
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sessions=st.lists(SESSION, min_size=2, max_size=4), order=st.randoms(use_true_random=False))
async def test_transactions_committed_in_any_order_are_read_exactly_once_in_position_order(
    pg_url: str, sessions: list[dict[str, Any]], order: Any
) -> None:
    """Each session opens a transaction, calls ringlog_append (the first takes the counter lock,
    the others wait for it), then commits or rolls back when its gate opens; gates open in a
    random order while a store appends too and a reader spins on ``read_all``."""
    store = PostgresStore(pg_url, pool_size=2, poll_interval=0, listen=False)
    await store.open()
    conns = [await asyncpg.connect(pg_url) for _ in sessions]
    try:
        start = await store.last_position()
        reader = GlobalReader(store, start)
        reader.start()
        tag = f"x{start}"
        gates = [asyncio.Event() for _ in sessions]

        async def session(i: int, spec: dict[str, Any], conn: asyncpg.Connection) -> None:
            stream = f"{tag}-{spec['stream']}-{i}" if spec["stream"] == "own" else f"{tag}-{spec['stream']}"
            events = [
                created() if kind == "created" else segment(content=f"{kind} 1000000000000000000")
                for kind in spec["events"]
            ]
            tx = conn.transaction()
            await tx.start()
            head = await conn.fetchval("SELECT COALESCE(MAX(seq), 0) FROM events WHERE draft_id = $1", stream)
            await conn.fetch(_APPEND, *_append_arguments([pending(stream, events, head)]))
            await gates[i].wait()
            await (tx.commit() if spec["commit"] else tx.rollback())

        tasks = [
            asyncio.create_task(session(i, s, c))
            for i, (s, c) in enumerate(zip(sessions, conns, strict=True))
        ]
        from_store = asyncio.create_task(append_retrying(store, f"{tag}-shared-1", segment()))
        indexes = list(range(len(sessions)))
        order.shuffle(indexes)
        for i in indexes:
            gates[i].set()
            for _ in range(3):
                await reader.poll()
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*tasks, from_store)
        last = await store.last_position()
        await reader.finish(last)
        check_prefix(reader.seen, start + 1, last)
        assert reader.seen == await store.read_all(start, 10_000)
        assert (await verify_log(store)).ok
    finally:
        for conn in conns:
            await conn.close()
        await store.close()


# -- several stores at once ----------------------------------------------------------------------


async def test_three_stores_writing_at_once_give_a_reader_every_record_once(pg_url: str) -> None:
    stores = [PostgresStore(pg_url, pool_size=3, poll_interval=0.2) for _ in range(3)]
    for s in stores:
        await s.open()
    try:
        reader = GlobalReader(stores[0])
        reader.start()
        acknowledged: list[Record] = []

        async def writer(store: PostgresStore, w: int) -> None:
            own = f"own-{w}"
            for i in range(15):
                result = await store.append(own, [segment(content=f"{w}/{i}")], i)
                acknowledged.extend(result.records)
                await append_retrying(store, f"shared-{i % 3}", segment(content=f"{w}:{i}"))

        async with asyncio.timeout(120):
            await asyncio.gather(*(writer(stores[w % 3], w) for w in range(9)))
        last = await stores[1].last_position()
        assert last == 9 * 15 * 2
        await reader.finish(last)
        check_prefix(reader.seen, 1, last)
        by_position = {r.position: r for r in reader.seen}
        for r in acknowledged:  # what each caller was told is exactly what the log holds
            assert by_position[r.position] == r
        assert (await verify_log(stores[2])).ok
    finally:
        for s in stores:
            await s.close()


async def test_a_body_that_holds_its_position_is_stored_as_built_here(pg_url: str) -> None:
    """The database writes the position into the body; it must equal build_records' body,
    whatever digits the data itself holds."""
    store = PostgresStore(pg_url, pool_size=1, poll_interval=0, listen=False)
    await store.open()
    try:
        await store.append("pad", [created()] * 8, 0)  # positions of different widths below
        for content in ["1000000000000000000", "2000000000000000000", '{"id": 0}', "é\u2028\x7f"]:
            head = await store.head("d")
            result = await store.append("d", [segment(content=content), segment(content=content)], head)
            stored = await store.read("d", head)
            assert stored == list(result.records)
            for r in stored:
                assert b'"id":%d,' % r.position in r.body, r.body
        assert (await verify_log(store)).ok
    finally:
        await store.close()


async def test_an_append_returns_what_committed_while_it_waited_for_the_lock(pg_url: str) -> None:
    """``ringlog_append_after`` reads the records after the caller's cursor once it holds the
    counter lock, so a transaction that held the lock and committed meanwhile is in the answer
    (a read with the statement's first snapshot would miss it), in position order, bounded."""
    store = PostgresStore(pg_url, pool_size=2, poll_interval=0, listen=False)
    await store.open()
    holder = await asyncpg.connect(pg_url)
    caller = await asyncpg.connect(pg_url)
    try:
        await store.append("seen", [created()], 0)
        tx = holder.transaction()
        await tx.start()
        await holder.fetch(_APPEND, *_append_arguments([pending("held", [created(), segment()], 0)]))
        group = _append_arguments([pending("mine", [created()], 0)])
        waiting = asyncio.create_task(caller.fetch(_APPEND_AFTER, 1, 10, *group))
        async with asyncio.timeout(WAIT):
            while (
                await store._fetch(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            )[0][0] < 1:
                await asyncio.sleep(0.01)
        await tx.commit()
        rows = await asyncio.wait_for(waiting, WAIT)
        assert [r["outcome"] for r in rows] == ["committed", "committed", "ok"]
        assert [record_from_row(r[7:]) for r in rows[:2]] == await store.read_all(1, 2)
        assert rows[2]["last_position"] == 4
        bounded = await caller.fetch(_APPEND_AFTER, 0, 2, *_append_arguments([pending("b", [created()], 0)]))
        assert [r["outcome"] for r in bounded] == ["committed", "committed", "ok"]
        assert [r["r_position"] for r in bounded[:2]] == [1, 2]
        assert (await verify_log(store)).ok
    finally:
        await holder.close()
        await caller.close()
        await store.close()


async def test_a_version_2_database_gains_the_newer_functions_and_old_calls_keep_working(
    pg_url: str,
) -> None:
    """Versions 3 and 4 add ``ringlog_append_after`` and ``ringlog_append_group``: a version-2
    database is upgraded in place, and ``ringlog_append`` (what a version-2 node calls) works
    beside them."""
    store = PostgresStore(pg_url, pool_size=1, poll_interval=0, listen=False)
    await store.open()
    try:
        await store.append("d", [created()], 0)
        async with store._acquire() as conn:  # make it the database version 2 left
            await conn.execute("DROP FUNCTION ringlog_append_after")
            await conn.execute("DROP FUNCTION ringlog_append_group")
            await conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    finally:
        await store.close()
    store = PostgresStore(pg_url, pool_size=2, poll_interval=0, listen=False)
    await store.open()
    try:
        async with store._acquire() as conn:
            assert (
                await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'") == SCHEMA_VERSION
            )
            old_node = await conn.fetch(_APPEND, *_append_arguments([pending("d", [segment()], 1)]))
            assert [r["outcome"] for r in old_node] == ["ok"]
        result = await store.append("d", [segment()], 2)
        assert [(r.position, r.seq) for r in result.records] == [(3, 3)]
        assert [r.seq for r in await store.read("d")] == [1, 2, 3]
        assert (await verify_log(store)).ok
    finally:
        await store.close()


async def test_a_newer_schema_version_is_never_lowered_by_an_older_node(pg_url: str) -> None:
    """Versions compare as numbers: a database a version-10 node marked stays at 10 when this
    node's (additive) schema script runs on open — compared as text, '10' < '3' lowered it."""
    store = PostgresStore(pg_url, pool_size=1, poll_interval=0, listen=False)
    await store.open()
    try:
        async with store._acquire() as conn:
            await conn.execute("UPDATE meta SET value = '10' WHERE key = 'schema_version'")
    finally:
        await store.close()
    store = PostgresStore(pg_url, pool_size=1, poll_interval=0, listen=False)
    await store.open()  # '10' != SCHEMA_VERSION: the script runs, and must keep 10
    try:
        async with store._acquire() as conn:
            assert await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'") == "10"
        await store.append("d", [created()], 0)
    finally:
        await store.close()


# -- a database written by the version-1 schema -------------------------------------------------


async def test_a_version_1_database_is_migrated_in_place_and_keeps_working(
    pg_url: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(V1_SCHEMA)
        old = build_records(
            "old", [created(), segment(), segment()], 0, 0, GENESIS_HASH, IdempotencyClaim("bob", "k", "fp")
        )
        async with conn.transaction():  # as version 1 wrote: counter lock, then the insert
            await conn.execute("SELECT position FROM log_head FOR UPDATE")
            await conn.executemany(
                f"INSERT INTO events ({RECORD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                [record_row(r) for r in old],
            )
        assert await conn.fetchval("SELECT to_regproc('ringlog_append')") is None
    finally:
        await conn.close()

    store = PostgresStore(pg_url, pool_size=2, poll_interval=0)
    await store.open()
    try:
        async with store._acquire() as c:
            assert await c.fetchval("SELECT value FROM meta WHERE key = 'schema_version'") == SCHEMA_VERSION
        assert await store.read_all() == old
        result = await store.append("old", [segment(content="after the migration")], 3)
        assert (result.records[0].position, result.records[0].seq) == (4, 4)
        replay = await store.append("other", [created()], 0, IdempotencyClaim("bob", "k", "fp"))
        assert replay.replayed is not None and (replay.replayed.stream_id, replay.replayed.seq) == ("old", 1)
        assert (await verify_log(store)).ok
        target = SQLiteStore(str(tmp_path / "copy.db"))
        await target.open()
        try:
            assert await copy_records(store, target) == 4
            assert await target.read_all() == await store.read_all()
            assert (await verify_log(target)).ok
        finally:
            await target.close()
    finally:
        await store.close()
    # opening it again (a second node, a restart) changes nothing
    again = PostgresStore(pg_url, pool_size=1, poll_interval=0, listen=False)
    await again.open()
    try:
        assert await again.last_position() == 4
        assert (await verify_log(again)).ok
    finally:
        await again.close()


async def test_data_changed_while_its_group_waits_for_the_lock_never_fails_after_the_commit(
    pg_url: str,
) -> None:
    """A group is encoded before it waits for the counter lock; what is committed and what the
    callers are told is that encoding, even if a caller's event data turns unencodable meanwhile
    (before: the records were re-encoded after the commit and the whole group failed)."""
    store = PostgresStore(pg_url, pool_size=2, poll_interval=0, listen=False)
    await store.open()
    holder = await asyncpg.connect(pg_url)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT position FROM log_head FOR UPDATE")
        data: dict[str, Any] = {"id": 0, "author_user_id": "u", "content": "as sent", "position": 1}
        event = NewEvent(
            "collab.segment_added", "u", "2025-12-23T20:30:45.123Z", {"segment": data}, ("segment", "id")
        )
        tasks = [asyncio.create_task(store.append(f"s{i}", [created()], 0)) for i in range(3)]
        tasks.append(asyncio.create_task(store.append("m", [event], 0)))
        async with asyncio.timeout(WAIT):
            while (
                await holder.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
                < 1
            ):
                await asyncio.sleep(0.01)
        data["content"] = object()  # unencodable now
        await tx.rollback()
        results = await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
        stored = await store.read_all()
        assert [r.records for r in results] == [(r,) for r in stored]
        assert b'"content":"as sent"' in stored[-1].body
        assert (await verify_log(store)).ok
    finally:
        await holder.close()
        await store.close()
