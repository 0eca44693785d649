"""The projector keeps every draft's state current from the log; rebuild recomputes it from the log alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from eventstore import Record, Store
from eventstore.memory import MemoryStore
from projections import AppendSegment, CreateDraft, UpdateDraft
from projections.runner import DraftProjector, rebuild, snapshot_json
from tests.projections.drafting import clock, execute, folded, populate


@pytest.fixture
async def projector(store: Store) -> AsyncIterator[DraftProjector]:
    p = DraftProjector(store, flush_interval=0)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def test_a_read_after_an_append_sees_it(store: Store, projector: DraftProjector) -> None:
    now = clock()
    await execute(store, "d1", CreateDraft("alice", "d1", "Title"), next(now), projector)
    for n in range(1, 20):
        records = await execute(store, "d1", AppendSegment("alice", f"s{n}"), next(now), projector)
        assert isinstance(records, tuple) and records[0].seq == n + 1
        state = await projector.get("d1")
        assert state is not None and state.seq == n + 1 and len(state.segments) == n
    assert await projector.get("d1") == await folded(store, "d1")
    assert await projector.get("missing") is None
    assert [s.id for s in await projector.drafts_for("alice")] == ["d1"]
    assert await projector.drafts_for("bob") == []


async def test_concurrent_appends_and_reads_never_see_a_stale_state(
    store: Store, projector: DraftProjector
) -> None:
    now = clock()
    for i in range(5):
        await execute(store, f"d{i}", CreateDraft("alice", f"d{i}", "T"), next(now), projector)

    async def writer(draft_id: str) -> None:
        for n in range(20):
            outcome = await execute(store, draft_id, AppendSegment("alice", f"{n}"), next(now), projector)
            assert isinstance(outcome, tuple)
            state = await projector.get(draft_id)
            assert state is not None and state.seq >= outcome[-1].seq

    await asyncio.gather(*(writer(f"d{i}") for i in range(5)))
    for i in range(5):
        assert await projector.get(f"d{i}") == await folded(store, f"d{i}")


async def test_restart_from_snapshots_and_advance(store: Store) -> None:
    ids = await populate(store, drafts=3, steps=40)
    first = DraftProjector(store, flush_interval=0)
    await first.start()
    await first.stop()  # saves snapshots with their checkpoint
    assert await store.snapshot_checkpoint() == await store.last_position()
    assert {s.stream_id for s in await store.list_snapshots()} == set(ids)

    now = clock(1_900_000_000_000)
    await execute(store, "draft_0", UpdateDraft("alice", title="After the snapshot"), next(now))
    second = DraftProjector(store, flush_interval=0)
    await second.start()
    try:
        for draft_id in ids:
            assert await second.get(draft_id) == await folded(store, draft_id)
        state = await second.get("draft_0")
        assert state is not None and state.title == "After the snapshot"
        assert second.position == await store.last_position()
        for draft_id in ids:
            state = await second.get(draft_id)
            assert state is not None
            assert await second.state_at(draft_id, 3) == await folded(store, draft_id, 3)
    finally:
        await second.stop()


async def test_rebuild_recomputes_every_snapshot_from_the_log(store: Store) -> None:
    ids = await populate(store, drafts=4, steps=60)
    from eventstore import Snapshot

    await store.save_snapshots([Snapshot("draft_0", 10_000, b"garbage"), Snapshot("ghost", 1, b"{}")], 5)
    seen: list[tuple[int, int]] = []
    count = await rebuild(store, lambda done, total: seen.append((done, total)))
    total = await store.last_position()
    assert count == total and seen[-1] == (total, total)
    snapshots = await store.list_snapshots()
    assert [s.stream_id for s in snapshots] == sorted(ids)  # the stale and the ghost snapshots are gone
    for snap in snapshots:
        state = await folded(store, snap.stream_id)
        assert state is not None and snap.seq == state.seq and snap.state == state.to_json()
    assert await store.snapshot_checkpoint() == total


async def test_rebuild_of_an_empty_log(store: Store) -> None:
    assert await rebuild(store) == 0
    assert await store.list_snapshots() == []


class GatedStore(MemoryStore):
    """A real in-memory store whose global reads can be held, to stall the projector's advance."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = 0

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Record]:
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return await super().read_all(after_position, limit)


async def test_a_read_while_the_projector_advances_still_sees_the_last_append() -> None:
    """While the projector advances from the log, its cache must not serve a state older than an append."""
    store = GatedStore()
    projector = DraftProjector(store, flush_interval=0)
    await projector.start()
    now = clock()
    try:
        await execute(store, "d1", CreateDraft("alice", "d1", "Title"), next(now), projector)
        cached = await projector.get("d1")
        assert cached is not None and cached.seq == 1

        store.gate.clear()
        advancing = asyncio.create_task(projector.advance())
        while store.waiting == 0:
            await asyncio.sleep(0)
        records = await execute(store, "d1", AppendSegment("alice", "while advancing"), next(now), projector)
        assert isinstance(records, tuple) and records[0].seq == 2

        state = await projector.get("d1")
        assert state is not None and state.seq == 2, "served a state older than a successful append"

        store.gate.set()
        await advancing
        assert await projector.get("d1") == await folded(store, "d1")
        assert projector.known_head("d1") == 2
    finally:
        store.gate.set()
        await projector.stop()


async def test_a_long_snapshot_is_encoded_in_pieces_that_let_other_tasks_run(store: Store) -> None:
    ids = await populate(store, drafts=1, steps=60)
    state = await folded(store, ids[0])
    assert state is not None and len(state.segments) > 10
    turns = 0

    async def other_task() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    try:
        before = turns
        raw = await snapshot_json(state, segments_per_piece=3)
        assert turns - before >= len(state.segments) // 3  # a turn of the loop between two pieces
    finally:
        task.cancel()
    assert raw == state.to_json()
    assert await snapshot_json(state, segments_per_piece=len(state.segments)) == raw
