"""Other processes' records are folded lazily, and snapshots are saved by one leader.

A projector folds a segment of a draft it has not cached by moving the summary's seq only (its
``updated_at`` is decoded when a listing asks), and a draft is folded into the cache only when
it is read here (projections/runner.py). Every reader must still get the fold of the log: a
node that never read a draft serves it right after other nodes' appends, a listing equals the
fold of the log's prefix, and a node never serves a state older than what it acknowledged.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import Store
from eventstore.postgres import PostgresStore
from projections import AddCollaborator, AppendSegment, CreateDraft, UpdateDraft
from projections.runner import DraftProjector
from projections.state import DraftSummary
from tests.pgutil import temporary_database
from tests.projections.drafting import clock, execute, folded


async def _summary_of_log(store: Store, draft_id: str, seq: int) -> DraftSummary:
    state = await folded(store, draft_id, seq)
    assert state is not None
    return state.summary()


async def test_a_draft_never_read_here_is_listed_and_served_as_its_log_folds(store: Store) -> None:
    projector = DraftProjector(store, flush_interval=0)
    await projector.start()
    try:
        now = clock()
        # appended without the projector: it hears of each commit, but never reads the draft
        await execute(store, "d1", CreateDraft("alice", "d1", "First"), next(now))
        for n in range(30):
            await execute(store, "d1", AppendSegment("alice", f"s{n}"), next(now))
        await execute(store, "d1", AddCollaborator("alice", "bob", "viewer"), next(now))
        await execute(store, "d1", UpdateDraft("alice", title="Second"), next(now))
        for n in range(5):
            await execute(store, "d1", AppendSegment("alice", f"t{n}"), next(now))
        last = await store.read("d1", 37)
        assert [r.seq for r in last] == [38]
        assert projector.cached("d1", 38) is None  # nothing was folded into a state here
        head = await _summary_of_log(store, "d1", 38)
        assert [await projector.drafts_for(u) for u in ("alice", "bob")] == [[head], [head]]
        assert projector.known_head("d1") == 38
        assert await projector.get("d1") == await folded(store, "d1")
        await projector.flush()
    finally:
        await projector.stop()
    again = DraftProjector(store, flush_interval=0)  # restarts from the snapshot just saved
    await again.start()
    try:
        assert await again.drafts_for("bob") == [head]
        assert await again.get("d1") == await folded(store, "d1")
    finally:
        await again.stop()


async def test_the_undecoded_timestamps_kept_are_bounded_by_the_cache_size(store: Store) -> None:
    projector = DraftProjector(store, flush_interval=0, cache_size=2)
    await projector.start()
    try:
        now = clock()
        ids = [f"d{i}" for i in range(6)]
        for draft_id in ids:
            await execute(store, draft_id, CreateDraft("alice", draft_id, draft_id), next(now))
            await execute(store, draft_id, AppendSegment("alice", "x"), next(now))
        assert len(projector._stale_ts) <= 2
        listed = {s.id: s for s in await projector.drafts_for("alice")}
        assert listed == {d: await _summary_of_log(store, d, 2) for d in ids}
    finally:
        await projector.stop()


# -- two PostgreSQL nodes -------------------------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["append", "read", "list", "flush", "title"]), st.integers(0, 1), st.integers(0, 2)
    ),
    min_size=1,
    max_size=25,
)


class TwoNodes:
    """Two stores and projectors on one database, as two server processes run them."""

    def __init__(self, url: str, prefix: str) -> None:
        self.stores = [PostgresStore(url, 2, poll_interval=0.2) for _ in range(2)]
        self.projectors = [DraftProjector(s, flush_interval=0) for s in self.stores]
        self.drafts = [f"{prefix}_{i}" for i in range(3)]
        self.acked: list[dict[str, int]] = [{}, {}]  # per node: the last seq it acknowledged per draft
        self.now = clock()

    async def __aenter__(self) -> TwoNodes:
        for store, projector in zip(self.stores, self.projectors, strict=True):
            await store.open()
            await projector.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        for store, projector in zip(self.stores, self.projectors, strict=True):
            await projector.stop()
            await store.close()

    async def write(self, node: int, draft_id: str, title: bool) -> None:
        store, projector = self.stores[node], self.projectors[node]
        if projector.known_head(draft_id) == 0 and await folded(store, draft_id) is None:
            command = CreateDraft("alice", draft_id, "T")
        elif title:
            command = UpdateDraft("alice", title=f"title {next(self.now)}")
        else:
            command = AppendSegment("alice", "s")
        for _ in range(10):  # the other node may win the race for the same seq: decide again
            try:
                outcome = await execute(store, draft_id, command, next(self.now), projector)
            except Exception as e:
                if type(e).__name__ != "ConcurrencyConflict":
                    raise
                continue
            assert isinstance(outcome, tuple) and outcome, outcome
            self.acked[node][draft_id] = outcome[-1].seq
            return
        raise AssertionError("ten conflicts in a row")

    async def read(self, node: int, draft_id: str) -> None:
        state = await self.projectors[node].get(draft_id)
        if state is None:
            assert draft_id not in self.acked[node]
            return
        assert state.seq >= self.acked[node].get(draft_id, 0)  # read your writes
        assert state == await folded(self.stores[node], draft_id, state.seq)  # a fold of a prefix

    async def list(self, node: int) -> None:
        for summary in await self.projectors[node].drafts_for("alice"):
            assert summary.seq >= self.acked[node].get(summary.id, 0)
            assert summary == await _summary_of_log(self.stores[node], summary.id, summary.seq)


@pytest.mark.postgres
async def test_interleaved_appends_and_reads_on_two_nodes_always_read_a_fold_of_the_log() -> None:
    async with temporary_database() as url:
        examples = itertools.count()

        async def example(ops: list[tuple[str, int, int]]) -> None:
            async with TwoNodes(url, f"x{next(examples)}_{uuid.uuid4().hex[:6]}") as nodes:
                for kind, node, d in ops:
                    draft_id = nodes.drafts[d]
                    if kind in ("append", "title"):
                        await nodes.write(node, draft_id, kind == "title")
                    elif kind == "read":
                        await nodes.read(node, draft_id)
                    elif kind == "list":
                        await nodes.list(node)
                    else:
                        await nodes.projectors[node].flush()
                for node in (0, 1):
                    await nodes.list(node)
                    for draft_id in nodes.drafts:
                        await nodes.read(node, draft_id)

        @settings(
            max_examples=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        @given(OPS)
        def run(ops: list[tuple[str, int, int]]) -> None:
            asyncio.run(example(ops))

        # the examples run their own event loops, so they run in a thread beside this test's loop
        await asyncio.wait_for(asyncio.to_thread(run), 300)


@pytest.mark.postgres
async def test_only_the_snapshot_leader_moves_the_checkpoint_and_saves_others_drafts() -> None:
    async with temporary_database() as url, TwoNodes(url, "lead") as nodes:
        assert all([await s.wait_listening(10) for s in nodes.stores])
        leaders = [s.snapshot_leader for s in nodes.stores]
        assert sorted(leaders) == [False, True], leaders  # one lock, one holder
        lead, other = leaders.index(True), leaders.index(False)
        await nodes.write(other, "a", False)  # created and cached on the other node
        await nodes.write(other, "a", False)
        await nodes.write(lead, "b", False)
        head = nodes.stores[other].published_position
        for _ in range(100):  # the leader hears of the other node's commits (bounded)
            if nodes.projectors[lead].known_head("a") == 2:
                break
            await asyncio.sleep(0.05)
        await nodes.projectors[other].flush()  # saves its cached draft, moves no checkpoint
        assert await nodes.stores[other].snapshot_checkpoint() == 0
        assert [(s.stream_id, s.seq) for s in await nodes.stores[other].list_snapshots("", 10)] == [("a", 2)]
        await nodes.projectors[lead].advance()
        await nodes.projectors[lead].flush()  # saves every changed draft, "a" too, uncached
        assert nodes.projectors[lead].cached("a", 2) is None
        assert await nodes.stores[lead].snapshot_checkpoint() >= head
        saved = {s.stream_id: s.seq for s in await nodes.stores[lead].list_snapshots("", 10)}
        assert saved == {"a": 2, "b": 1}


@pytest.mark.postgres
async def test_a_lead_freed_by_a_closed_node_is_taken_by_another() -> None:
    async with temporary_database() as url:
        stores = [PostgresStore(url, 2, poll_interval=0.1) for _ in range(2)]
        for store in stores:
            await store.open()
            assert await store.wait_listening(10)
        try:
            leaders = [s.snapshot_leader for s in stores]
            assert sorted(leaders) == [False, True], leaders
            lead = leaders.index(True)
            await stores[lead].close()
            other = stores[1 - lead]
            for _ in range(200):  # bounded: the other node tries at each ping (every 0.1 s here)
                if other.snapshot_leader:
                    break
                await asyncio.sleep(0.05)
            assert other.snapshot_leader
        finally:
            for store in stores:
                await store.close()
