"""Past states (``GET …?at_seq=N``, API.md v2 "Time travel over HTTP"): folding from a kept
state or a snapshot at seq k is the fold of the log's first N events, on hits and misses alike,
and the cache of past states keeps to its bounds."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import Record, Store
from eventstore.events import Snapshot
from eventstore.memory import MemoryStore
from projections import CreateDraft
from projections.past import PastStates, approximate_size
from projections.runner import DraftProjector
from projections.state import DraftState, RingState
from tests.projections.drafting import clock, execute, folded
from tests.projections.test_fold_properties import DRAFTS, _command, steps


class _RecordsOnly:
    """A store seen through ``read`` and ``load_snapshot`` only (no stream-body fast path)."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def read(self, stream_id: str, after_seq: int = 0, limit: int | None = None) -> list[Record]:
        return list(await self._store.read(stream_id, after_seq, limit))

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        return await self._store.load_snapshot(stream_id)


async def _history(plan: list[tuple[str, str, str, str, str, str]]) -> MemoryStore:
    store = MemoryStore()
    now = clock()
    for draft_id, action, user, other, text, role in plan:
        state = await folded(store, draft_id)
        if (action == "create") != (state is None):
            action = "create" if state is None else "segment"
        if action == "create" and state is not None:
            continue
        outcome = await execute(
            store, draft_id, _command(action, draft_id, user, other, text, role), next(now)
        )
        assert outcome is not None
    if not await store.read(DRAFTS[0]):
        await execute(store, DRAFTS[0], CreateDraft("alice", DRAFTS[0], "T"), next(now))
    return store


async def _check(plan: Any, data: st.DataObject) -> None:
    store = await _history(plan)
    draft_id = data.draw(st.sampled_from([d for d in DRAFTS if await store.read(d, 0, 1)]))
    head = (await folded(store, draft_id)).seq  # type: ignore[union-attr]
    projector = DraftProjector(
        store if data.draw(st.booleans(), "fast path") else cast(Store, _RecordsOnly(store)),
        past=PastStates(max_entries=data.draw(st.integers(0, 4), "entries")),
    )
    import projections.runner as runner

    runner_chunk = runner.FOLD_CHUNK
    runner.FOLD_CHUNK = data.draw(st.integers(1, 7), "chunk")
    try:
        for seq in data.draw(st.lists(st.integers(1, head), min_size=1, max_size=4), "kept"):
            state = await folded(store, draft_id, seq)
            assert state is not None
            projector.past.put(state)
        if data.draw(st.booleans(), "snapshot"):
            j = data.draw(st.integers(1, head), "snapshot seq")
            snap = await folded(store, draft_id, j)
            assert snap is not None
            await store.save_snapshots([Snapshot(draft_id, j, snap.to_json())], 0)
        for n in data.draw(st.lists(st.integers(1, head), min_size=1, max_size=5), "asked"):
            expected = await folded(store, draft_id, n)
            got = await projector.state_at(draft_id, n)
            assert got == expected
            assert got is not None and got.seq == n
        if projector.past.max_entries > 0:  # the last answer is kept: asking again is a hit
            hits = projector.past.hits
            assert await projector.state_at(draft_id, n) == expected
            assert projector.past.hits == hits + 1
    finally:
        runner.FOLD_CHUNK = runner_chunk


@settings(max_examples=150, deadline=None)
@given(steps, st.data())
def test_folding_from_a_kept_state_or_snapshot_is_the_fold_of_the_prefix(
    plan: Any, data: st.DataObject
) -> None:
    asyncio.run(_check(plan, data))


def _state(draft_id: str, seq: int, text: str = "") -> DraftState:
    return DraftState(
        id=draft_id,
        title="T",
        description=text,
        creator_id="alice",
        collaborators=(),
        segments=(),
        ring_state=RingState("alice", ("alice",)),
        seq=seq,
        created_at="2026-01-01T00:00:00.000Z",
        updated_at="2026-01-01T00:00:00.000Z",
    )


def test_the_cache_keeps_to_its_entry_bound_dropping_the_least_recently_used() -> None:
    past = PastStates(max_entries=3, max_bytes=1 << 30)
    for seq in (1, 2, 3):
        past.put(_state("d", seq))
    assert past.get("d", 1) is not None  # 1 is now the most recently used
    past.put(_state("d", 4))
    assert len(past) == 3
    assert past.get("d", 2) is None and past.get("d", 1) is not None


def test_the_cache_keeps_to_its_byte_bound_and_refuses_a_state_larger_than_it() -> None:
    one = approximate_size(_state("d", 1, "x" * 10_000))
    past = PastStates(max_entries=100, max_bytes=2 * one + 10)
    for seq in (1, 2, 3):
        past.put(_state("d", seq, "x" * 10_000))
    assert len(past) == 2 and past.bytes <= past.max_bytes
    assert past.get("d", 1) is None
    past.put(_state("d", 9, "x" * (3 * one)))
    assert past.get("d", 9) is None and len(past) == 2


def test_the_nearest_kept_state_is_the_highest_at_or_below_the_seq_of_that_draft() -> None:
    past = PastStates()
    for draft_id, seq in (("d", 3), ("d", 8), ("e", 6), ("d", 12)):
        past.put(_state(draft_id, seq))
    found = past.nearest_at_or_below("d", 10)
    assert found is not None and (found.id, found.seq) == ("d", 8)
    assert past.nearest_at_or_below("d", 2) is None
    assert past.nearest_at_or_below("f", 99) is None
