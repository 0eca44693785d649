"""The feed index on every backend: equal to a scan of the log, rebuilt, copied, shared by writers."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from eventstore import Store, open_store
from eventstore.errors import UnrepresentableValue
from projections import feed_index
from projections.decide import AppendSegment, CreateDraft
from projections.feed_index import FeedProjector, rebuild_feed
from projections.runner import DraftProjector, rebuild
from server.copy_command import copy_log
from tests.pgutil import temporary_database
from tests.projections.drafting import execute
from tests.projections.feedlog import USERS, brute_force_feed, random_history


async def _index(store: Store) -> dict[str, list[int]]:
    upto = await store.last_position()
    return {u: [p for p, _ in await store.feed_read(u, 0, upto, 1_000_000)] for u in USERS}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_index_equals_a_scan_of_the_log(store: Store, seed: int) -> None:
    await random_history(store, 150, seed)
    projector = FeedProjector(store)
    await projector.advance()
    assert projector.position == await store.last_position() >= await store.feed_checkpoint()
    assert await _index(store) == await brute_force_feed(store)


@pytest.mark.parametrize("seed", [12, 13])
async def test_a_started_projector_indexes_from_the_commits_published_to_it(store: Store, seed: int) -> None:
    projector = FeedProjector(store)
    await projector.start()
    try:
        await random_history(store, 150, seed)  # each append is published before it returns
        assert await projector.reached(await store.last_position(), 20)
    finally:
        await projector.stop()
    assert await _index(store) == await brute_force_feed(store)


async def test_the_index_keeps_up_with_appends_between_advances(store: Store) -> None:
    projector = FeedProjector(store)
    for seed in range(4):
        await random_history(store, 40, seed)
        await projector.advance()
    assert await _index(store) == await brute_force_feed(store)
    bodies = await store.feed_read("alice", 0, projector.position, 1000)
    records = {r.position: r.body for r in await store.read_all(0, 100_000)}
    assert all(records[p] == body for p, body in bodies)  # entries carry the event's own bytes


@pytest.mark.parametrize("page", [3, 2000])
async def test_a_projector_started_at_a_checkpoint_folds_each_draft_from_its_log(
    store: Store, page: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_index, "PAGE", page)  # small pages: drafts folded in several chunks
    await random_history(store, 80, 5)
    first = FeedProjector(store)
    await first.advance()
    drafts = DraftProjector(
        store, flush_interval=0
    )  # snapshots at this point: the fresh one starts from them
    await drafts.start()
    await drafts.stop()
    assert await store.list_snapshots()
    await random_history(store, 80, 6)  # more events of the same drafts, indexed by a fresh process
    second = FeedProjector(store)
    await second.start()
    try:
        assert await second.reached(await store.last_position(), 20)
    finally:
        await second.stop()
    assert await _index(store) == await brute_force_feed(store)


async def test_rebuild_reproduces_the_index(store: Store) -> None:
    await random_history(store, 120, 7)
    await FeedProjector(store).advance()
    kept = await _index(store)
    await rebuild(store)
    assert await _index(store) == kept == await brute_force_feed(store)
    assert await store.feed_checkpoint() == await store.last_position()
    await store.reset_feed()
    assert await store.feed_checkpoint() == 0 and await _index(store) == {u: [] for u in USERS}
    await rebuild_feed(store)
    assert await _index(store) == kept


async def test_two_projectors_on_one_store_write_each_position_once(store: Store) -> None:
    await random_history(store, 120, 8)
    a, b = FeedProjector(store), FeedProjector(store)
    await asyncio.gather(a.advance(), b.advance())
    assert a.position == b.position == await store.last_position()
    assert await _index(store) == await brute_force_feed(store)


async def test_an_index_write_outside_the_checkpoint_changes_nothing(store: Store) -> None:
    await random_history(store, 20, 9)
    last = await store.last_position()
    assert await store.feed_index([("alice", 1)], 0, 1) == 1
    assert await store.feed_index([("bob", 1)], 0, 1) == 1  # already covered: not written
    assert await store.feed_index([("bob", 3)], 2, 3) == 1  # a gap after the checkpoint: refused
    assert [p for p, _ in await store.feed_read("bob", 0, last, 10)] == []
    with pytest.raises(ValueError):
        await store.feed_index([("bob", 5)], 1, 3)
    with pytest.raises(UnrepresentableValue):
        await store.feed_index([("bo\x00b", 2)], 1, 2)
    assert await store.feed_read("bo\x00b", 0, last, 10) == []
    assert await store.feed_checkpoint() == 1


async def test_copy_keeps_the_index(tmp_path: Path) -> None:
    source_url = str(tmp_path / "source.db")
    source = open_store(source_url)
    await source.open()
    try:
        await random_history(source, 120, 10)
        await FeedProjector(source).advance()
        expected = await _index(source)
    finally:
        await source.close()
    targets = [str(tmp_path / "target.db")]
    async with temporary_database() as pg_url:
        targets.append(pg_url)
        for target_url in targets:
            assert await copy_log(source_url, target_url) == 0
            target = open_store(target_url)
            await target.open()
            try:
                assert await _index(target) == expected
            finally:
                await target.close()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_database_from_before_the_feed_gains_the_index_when_opened(kind: str, tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        url = (
            str(tmp_path / "old.db")
            if kind == "sqlite"
            else await stack.enter_async_context(temporary_database())
        )
        store = open_store(url)
        await store.open()
        await random_history(store, 60, 11)
        expected = await brute_force_feed(store)
        await store.close()
        await _drop_the_feed(kind, url)  # as a database written before the feed existed
        store = open_store(url)
        await store.open()
        try:
            assert await store.feed_checkpoint() == 0
            projector = FeedProjector(store)
            await projector.start()  # the index is built from the log in the background
            try:
                assert await projector.reached(await store.last_position(), 20)
            finally:
                await projector.stop()
            assert await _index(store) == expected
        finally:
            await store.close()


async def _drop_the_feed(kind: str, url: str) -> None:
    if kind == "sqlite":

        def drop() -> None:
            conn = sqlite3.connect(url)
            try:
                conn.execute("DROP TABLE feed")
                conn.execute("DELETE FROM meta WHERE key = 'feed_checkpoint'")
                conn.commit()
            finally:
                conn.close()

        await asyncio.to_thread(drop)
        return
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP TABLE feed")
        await conn.execute("DELETE FROM meta WHERE key = 'feed_checkpoint'")
    finally:
        await conn.close()


async def test_a_range_without_entries_is_not_written_until_stop(store: Store) -> None:
    draft = "draft_quiet"
    await execute(store, draft, CreateDraft("alice", draft, "quiet"), "2025-12-23T20:30:45.123Z")
    projector = FeedProjector(store)
    await projector.start()
    try:
        assert await projector.reached(1, 20)
        assert await store.feed_checkpoint() == 1  # the creation is alice's: written with its entry
        for k in range(5):  # segments concern nobody
            await execute(store, draft, AppendSegment("alice", f"s{k}"), "2025-12-23T20:30:46.123Z")
        assert await projector.reached(6, 20)
        assert await store.feed_checkpoint() == 1
        items, last = await projector.read("alice", 1, 10)
        assert items == [] and last == 6  # served up to 6 all the same: nothing there to miss
    finally:
        await projector.stop()
    assert await store.feed_checkpoint() == 6  # stored at stop: a restart does not fold them again
