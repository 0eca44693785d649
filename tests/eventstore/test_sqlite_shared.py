"""Several SQLite stores on one file (issue 11): what separate server processes do, in one process.

Each store opened ``shared`` is what one ``ringlog serve`` process holds. Appends through any of
them are serialised by SQLite (and their turn lock); each store learns of the others' commits by
commit discovery, so every store's notifier gets every record once, in position order, and its
idempotency and expected-seq checks see the others' appends.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import ConcurrencyConflict, IdempotencyClaim, Record
from eventstore.sqlite import SQLiteStore
from tests.eventstore.helpers import append_retrying, created, segment

WAIT = 10.0


async def _open(path: Path, n: int) -> list[SQLiteStore]:
    stores = [SQLiteStore(path, synchronous="NORMAL", shared=True, poll_interval=5.0) for _ in range(n)]
    for store in stores:
        await store.open()
    return stores


class _Seen(list[Record]):
    """The records a store's notifier published, and a way to await a count of them."""

    def __init__(self, store: SQLiteStore) -> None:
        super().__init__()
        self._grew = asyncio.Event()
        store.notifier.add_global_listener(self._take)

    def _take(self, records: Sequence[Record]) -> None:
        self.extend(records)
        self._grew.set()

    async def reach(self, count: int, timeout: float = WAIT) -> None:
        async def wait() -> None:
            while len(self) < count:
                self._grew.clear()
                await self._grew.wait()

        await asyncio.wait_for(wait(), timeout)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3)), min_size=1, max_size=30))
async def test_every_store_publishes_every_record_once_in_position_order(
    tmp_path_factory: pytest.TempPathFactory, plan: list[tuple[int, int]]
) -> None:
    path = tmp_path_factory.mktemp("shared") / "log.db"
    stores = await _open(path, 3)
    seen = [_Seen(s) for s in stores]
    try:
        # concurrent appends through the three stores, to four streams, each after its current head
        await asyncio.gather(
            *(
                append_retrying(stores[via], f"s{stream}", segment(content=f"{i}"))
                for i, (via, stream) in enumerate(plan)
            )
        )
        for got in seen:
            await got.reach(len(plan))
        log = await stores[0].read_all(0, 10_000)
        assert [r.position for r in log] == list(range(1, len(plan) + 1))
        for got in seen:
            assert [r.position for r in got] == [r.position for r in log]  # once each, in order
    finally:
        for store in stores:
            await store.close()


async def test_expected_seq_and_idempotency_hold_across_stores(tmp_path: Path) -> None:
    a, b = await _open(tmp_path / "log.db", 2)
    try:
        await a.append("d", [created()], 0)
        with pytest.raises(ConcurrencyConflict):
            await b.append("d", [created()], 0)  # b's head cache must not believe the stream is empty
        claim = IdempotencyClaim("alice", "key-1", "fp")
        first = await a.append("d", [segment()], 1, claim)
        again = await b.append("d", [segment()], 2, claim)  # the key was used through a
        assert again.replayed is not None and again.replayed.seq == first.records[0].seq
        assert await b.head("d") == 2
    finally:
        await a.close()
        await b.close()


async def test_a_commit_reaches_another_store_without_the_periodic_check(tmp_path: Path) -> None:
    a, b = await _open(tmp_path / "log.db", 2)  # poll every 5 s: only the wake-up can be this fast
    try:
        got = _Seen(b)
        await a.append("d", [created()], 0)
        await got.reach(1, timeout=2.0)
        assert got[0].stream_id == "d" and b.published_position == 1
    finally:
        await a.close()
        await b.close()


async def test_a_store_sets_up_its_schema_in_the_writers_turn(tmp_path: Path) -> None:
    """A process opening the file while another holds the writers' turn (mid group commit, or
    setting up the schema itself) waits for the turn instead of failing "database is locked"
    (seen as a worker of ``--workers 2`` exiting at start, or when restarted under load)."""
    path = tmp_path / "log.db"
    (first,) = await _open(path, 1)
    await first.append("d1", [created("alice")], expected_seq=0)
    turn = os.open(str(path) + ".writer", os.O_RDWR | os.O_CREAT)
    fcntl.flock(turn, fcntl.LOCK_EX)  # another process's commit in progress
    second = SQLiteStore(path, synchronous="NORMAL", shared=True, poll_interval=5.0)
    opening = asyncio.ensure_future(second.open())
    try:
        await asyncio.sleep(0.3)  # the state being checked: still waiting, not failed
        assert not opening.done(), opening
        fcntl.flock(turn, fcntl.LOCK_UN)
        await asyncio.wait_for(opening, WAIT)
        result = await second.append("d1", [segment("alice", "after")], expected_seq=1)
        assert result.records[-1].seq == 2
    finally:
        os.close(turn)
        await second.close()
        await first.close()
