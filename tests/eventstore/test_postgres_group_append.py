"""Schema version 4: a group appended by one set-based function, checked by a per-statement trigger.

``ringlog_append_group`` must decide and store exactly what ``ringlog_append_after`` (version 3,
one statement per append and per event) does, so hypothesis runs both on the same groups against
the same log, each in a transaction rolled back, and compares the answers and the rows byte for
byte. The per-statement insert check must refuse every multi-row insert that does not continue
the log, whoever sends it; and a database of version 3 (per-row trigger) must migrate in place,
with older nodes' calls, and an older node's schema script run on the new database, still working.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import Record
from eventstore.events import GENESIS_HASH, IdempotencyClaim, build_records, chain_hash
from eventstore.pg_schema import SCHEMA_VERSION
from eventstore.postgres import (
    _APPEND,
    _APPEND_AFTER,
    _APPEND_GROUP,
    _INSERT,
    PostgresStore,
    _append_arguments,
    _record_columns,
)
from eventstore.verify import verify_log
from tests.eventstore.helpers import created, pending, segment
from tests.pgutil import temporary_database

pytestmark = pytest.mark.postgres

V3_SCHEMA = (Path(__file__).parent / "pg_schema_v3.sql").read_text()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with temporary_database() as url:
        yield url


async def _trigger_level(conn: asyncpg.Connection) -> str:
    """'statement' or 'row': how the events_next_only trigger fires (pg_trigger.tgtype bit 0)."""
    tgtype = await conn.fetchval(
        "SELECT tgtype FROM pg_trigger WHERE tgname = 'events_next_only' AND tgrelid = 'events'::regclass"
    )
    return "row" if tgtype & 1 else "statement"


# -- the set-based function decides exactly as the per-append one ------------------------------

APPEND = st.fixed_dictionaries(
    {
        "stream": st.sampled_from(["a", "b", "c"]),
        "expected": st.sampled_from(["head", "head", "head", "behind", "ahead"]),
        "events": st.lists(st.sampled_from(["created", "segment", "digits"]), max_size=3),
        # a key without a user (never sent by the store) matches nothing, as NULL = NULL in SQL
        "key": st.none() | st.tuples(st.sampled_from(["alice", "bob", None]), st.sampled_from(["k1", "k2"])),
        "fp": st.sampled_from(["fp-1", "fp-2"]),
    }
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    groups=st.lists(st.lists(APPEND, min_size=1, max_size=6), min_size=1, max_size=4), back=st.integers(0, 3)
)
async def test_the_group_function_answers_and_stores_exactly_what_the_per_append_one_does(
    pg_url: str, groups: list[list[dict[str, Any]]], back: int
) -> None:
    store = PostgresStore(pg_url, pool_size=1, poll_interval=0, listen=False)
    await store.open()
    try:
        async with store._acquire() as conn:
            for spec in groups:
                start = int(await conn.fetchval("SELECT position FROM log_head"))
                heads = {
                    s: int(
                        await conn.fetchval("SELECT COALESCE(MAX(seq), 0) FROM events WHERE draft_id = $1", s)
                    )
                    for s in "abc"
                }
                group = []
                for item in spec:
                    head = heads[item["stream"]]
                    expected = {"head": head, "behind": head - 1, "ahead": head + 1}[item["expected"]]
                    events = [
                        created()
                        if kind == "created"
                        else segment(content="1000000000000000000" if kind == "digits" else "text")
                        for kind in item["events"]
                    ]
                    claim = (
                        IdempotencyClaim(item["key"][0], item["key"][1], item["fp"]) if item["key"] else None
                    )
                    group.append(pending(item["stream"], events, max(expected, 0), claim))
                    if item["expected"] == "head":
                        heads[item["stream"]] += len(events)  # later appends of the group follow it
                args = _append_arguments(group)
                after = max(start - back, 0)
                answers = []
                for sql, keep in ((_APPEND_AFTER, False), (_APPEND_GROUP, True)):
                    tx = conn.transaction()
                    await tx.start()
                    try:
                        rows = [tuple(r) for r in await conn.fetch(sql, after, 2, *args)]
                        stored = [
                            tuple(r)
                            for r in await conn.fetch(
                                "SELECT * FROM events WHERE position > $1 ORDER BY position", start
                            )
                        ]
                        counter = await conn.fetchval("SELECT position FROM log_head")
                        answers.append((rows, stored, counter))
                    finally:
                        await (tx.commit() if keep else tx.rollback())
                assert answers[0] == answers[1]
        assert (await verify_log(store)).ok
    finally:
        await store.close()


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda args: (_APPEND, *args), id="ringlog_append (version 2)"),
        pytest.param(lambda args: (_APPEND_AFTER, 0, 10, *args), id="ringlog_append_after (version 3)"),
        pytest.param(lambda args: (_APPEND_GROUP, 0, 10, *args), id="ringlog_append_group (version 4)"),
    ],
)
async def test_a_group_decides_keys_and_heads_in_order_inside_one_call(pg_url: str, call: Any) -> None:
    """Later appends of a group see earlier ones (heads and keys), as plan_group's rules say,
    whichever version's function decides them."""
    store = PostgresStore(pg_url, pool_size=1, poll_interval=0, listen=False)
    await store.open()
    try:
        claim = IdempotencyClaim("alice", "k1", "fp-1")
        group = [
            pending("d", [created()], 0, claim),
            pending("d", [segment()], 1, None),
            pending("d", [segment()], 1, None),  # stale: d is at 2 by now
            pending("e", [created()], 0, IdempotencyClaim("alice", "k1", "fp-1")),  # replay of the first
            pending("e", [created()], 0, IdempotencyClaim("alice", "k1", "fp-2")),  # key reused
            pending("e", [], 0, IdempotencyClaim("bob", "k1", "fp-1")),  # nothing to append: no key kept
            pending("e", [created()], 0, IdempotencyClaim("bob", "k1", "fp-2")),
        ]
        async with store._acquire() as conn:
            rows = await conn.fetch(*call(_append_arguments(group)))
        assert [r["outcome"] for r in rows] == ["ok", "ok", "conflict", "replay", "reused", "ok", "ok"]
        assert rows[2]["head_seq"] == 2
        assert (rows[3]["found_stream"], rows[3]["found_seq"]) == ("d", 1)
        assert [r.seq for r in await store.read("d")] == [1, 2]
        assert [r.seq for r in await store.read("e")] == [1]
        assert (await verify_log(store)).ok
    finally:
        await store.close()


# -- the per-statement check refuses what does not continue the log ----------------------------


def _relink(records: list[Record], position_of: dict[int, int]) -> list[Record]:
    """The records with new positions (old → new) and each stream's hash chain recomputed over
    them from the genesis hash, so that only what the positions and seqs say is wrong."""
    out: list[Record] = []
    prev: dict[str, bytes] = {}
    for r in sorted(records, key=lambda r: (r.stream_id, r.seq)):
        position = position_of.get(r.position, r.position)
        link = chain_hash(prev.get(r.stream_id, GENESIS_HASH), position, r.body)
        prev[r.stream_id] = link
        out.append(dataclasses.replace(r, position=position, hash=link))
    return sorted(out, key=lambda r: r.position)


@pytest.mark.parametrize(
    "fault",
    [
        "none",
        "hash-broken-in-the-middle",
        "seq-before-its-predecessor",
        "positions-skip-inside",
        "first-seq-missing",
    ],
)
async def test_a_multi_row_insert_is_checked_as_a_whole(pg_url: str, fault: str) -> None:
    """One INSERT of several rows (as ``ringlog copy`` sends, or anyone at a prompt): refused
    unless every row continues the log, and then nothing of it is written."""
    store = PostgresStore(pg_url, pool_size=1, poll_interval=0, listen=False)
    await store.open()
    conn = await asyncpg.connect(pg_url)
    try:
        d = build_records("d", [created(), segment(), segment()], 0, 0, GENESIS_HASH, None)
        e = build_records("e", [created()], 0, 3, GENESIS_HASH, None)
        rows = d + e  # positions 1..4: d 1, 2, 3 and e 1
        if fault == "hash-broken-in-the-middle":
            rows[1] = dataclasses.replace(rows[1], hash=GENESIS_HASH)
        elif fault == "seq-before-its-predecessor":
            rows = _relink(rows, {2: 3, 3: 2})  # d's seq 3 at position 2, seq 2 at position 3
        elif fault == "positions-skip-inside":
            rows = _relink(rows, {4: 5})
        elif fault == "first-seq-missing":
            rows = [r for r in rows if (r.stream_id, r.seq) != ("d", 1)]
            rows = _relink(rows, {2: 1, 3: 2, 4: 3})
        if fault == "none":
            await conn.execute(_INSERT, *_record_columns(rows))
            assert await conn.fetchval("SELECT position FROM log_head") == 4
            assert await store.read_all() == rows
        else:
            with pytest.raises(asyncpg.PostgresError, match=r"ringlog|duplicate"):
                await conn.execute(_INSERT, *_record_columns(rows))
            assert await conn.fetchval("SELECT count(*) FROM events") == 0
            assert await conn.fetchval("SELECT position FROM log_head") == 0
        assert (await verify_log(store)).ok
        result = await store.append("f", [created()], 0)  # the log goes on after either
        assert result.records[0].position == await conn.fetchval("SELECT position FROM log_head")
    finally:
        await conn.close()
        await store.close()


async def test_an_insert_that_repeats_a_stored_seq_is_refused(pg_url: str) -> None:
    store = PostgresStore(pg_url, pool_size=1, poll_interval=0, listen=False)
    await store.open()
    conn = await asyncpg.connect(pg_url)
    try:
        first = (await store.append("d", [created(), segment()], 0)).records
        again = build_records("d", [segment()], 1, 2, first[0].hash, None)  # seq 2 again, at position 3
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute(_INSERT, *_record_columns(again))
        assert await store.last_position() == 2
        assert (await verify_log(store)).ok
    finally:
        await conn.close()
        await store.close()


async def test_an_insert_waits_for_the_counter_before_it_writes_a_row(pg_url: str) -> None:
    """The counter lock is taken before a statement writes anything (a BEFORE statement trigger),
    so a writer holding it can insert what a waiting statement would have written: the waiting
    one then fails on the duplicate alone. Taken only after the rows (the AFTER check alone),
    each would wait for the other: a deadlock, aborting one of them after deadlock_timeout."""
    store = PostgresStore(pg_url, pool_size=1, poll_interval=0, listen=False)
    await store.open()
    holder, other = await asyncpg.connect(pg_url), await asyncpg.connect(pg_url)
    try:
        rows = _record_columns(build_records("d", [created()], 0, 0, GENESIS_HASH, None))
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT position FROM log_head FOR UPDATE")
        waiting = asyncio.create_task(other.execute(_INSERT, *rows))
        async with asyncio.timeout(30):
            while not await holder.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            ):
                await asyncio.sleep(0.01)
        await holder.execute(_INSERT, *rows)  # the same row, by the lock holder
        await tx.commit()
        with pytest.raises(asyncpg.UniqueViolationError):
            await asyncio.wait_for(waiting, 30)
        assert [r.position for r in await store.read_all()] == [1]
        assert (await verify_log(store)).ok
    finally:
        await holder.close()
        await other.close()
        await store.close()


# -- from version 3 to version 4, and back again -------------------------------------------------


async def test_a_version_3_database_migrates_and_every_version_s_calls_keep_working(pg_url: str) -> None:
    """A database made by the version-3 script (per-row trigger) gets the per-statement one when
    a version-4 node opens it; an older node's script run afterwards (it runs its script whenever
    the version differs) leaves the trigger and the version alone; and appends through
    ``ringlog_append`` (version 2), ``ringlog_append_after`` (version 3) and the store (version 4)
    all land, in one contiguous log that verifies."""
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(V3_SCHEMA)
        assert await _trigger_level(conn) == "row"
        await conn.fetch(_APPEND_AFTER, 0, 0, *_append_arguments([pending("v3", [created()], 0, None)]))
    finally:
        await conn.close()

    store = PostgresStore(pg_url, pool_size=2, poll_interval=0, listen=False)
    await store.open()
    try:
        async with store._acquire() as c:
            assert await _trigger_level(c) == "statement"
            assert await c.fetchval("SELECT value FROM meta WHERE key = 'schema_version'") == SCHEMA_VERSION
            await c.execute(V3_SCHEMA)  # a version-3 node opening the database
            assert await _trigger_level(c) == "statement"
            assert await c.fetchval("SELECT value FROM meta WHERE key = 'schema_version'") == SCHEMA_VERSION
            rows = await c.fetch(
                _APPEND_AFTER, 0, 0, *_append_arguments([pending("v3", [segment(), segment()], 1, None)])
            )
            assert [r["outcome"] for r in rows] == ["ok"]
            rows = await c.fetch(
                _APPEND, *_append_arguments([pending("v2", [created(), segment()], 0, None)])
            )
            assert [r["outcome"] for r in rows] == ["ok"]
        result = await store.append("v3", [segment()], 3)
        assert [(r.position, r.seq) for r in result.records] == [(6, 4)]
        assert [r.position for r in await store.read_all()] == [1, 2, 3, 4, 5, 6]
        assert [r.seq for r in await store.read("v3")] == [1, 2, 3, 4]
        assert (await verify_log(store)).ok
    finally:
        await store.close()
