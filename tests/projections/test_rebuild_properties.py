"""``ringlog rebuild`` folds the snapshots and the feed index in one pass: the same as two.

* :class:`~projections.runner.LogRebuild` (pure, hypothesis): for any interleaving of valid draft
  logs cut into any pages, the states are ``LogFolder``'s and the feed entries are
  ``FeedFolder``'s, each folded on its own, and the entries are the model's
  (:func:`tests.projections.feedlog.expected_feed`, from whole states).
* :func:`~projections.runner.rebuild` on every backend, with small pages (several reads and
  index writes in flight): the snapshots equal each draft's fold and the index equals the one
  :func:`~projections.feed_index.rebuild_feed` (the separate feed pass) writes.
* A rebuild whose read fails half-way leaves the index complete up to its checkpoint, and a
  feed projector continues it to the whole feed.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import Store
from eventstore.errors import StoreUnavailable
from projections import runner
from projections.feed import FeedFolder
from projections.feed_index import FeedProjector, rebuild_feed
from projections.fold import LogFolder
from projections.runner import LogRebuild, rebuild
from tests.projections.drafting import folded
from tests.projections.eventlogs import random_log
from tests.projections.feedlog import USERS, brute_force_feed, expected_feed, random_history


def _interleaved(seed: int, drafts: int, length: int) -> list[tuple[int, bytes]]:
    """``(position, body)`` of several drafts' random logs, interleaved (each draft in seq order)."""
    rng = random.Random(seed)
    logs = [random_log(rng, f"draft_{d}", rng.randrange(1, length + 1)) for d in range(drafts)]
    order = [d for d, events in enumerate(logs) for _ in events]
    rng.shuffle(order)
    taken = [0] * drafts
    page: list[tuple[int, bytes]] = []
    for position, d in enumerate(order, start=1):
        page.append((position, orjson.dumps(logs[d][taken[d]], option=orjson.OPT_SORT_KEYS)))
        taken[d] += 1
    return page


def _pages(log: list[tuple[int, bytes]], cuts: list[int]) -> list[list[tuple[int, bytes]]]:
    bounds = sorted({0, len(log), *(c % (len(log) + 1) for c in cuts)})
    return [log[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 2**32),
    st.integers(1, 5),
    st.integers(1, 60),
    st.lists(st.integers(0, 400), max_size=6),
)
def test_one_pass_gives_the_states_and_the_feed_of_two(
    seed: int, drafts: int, length: int, cuts: list[int]
) -> None:
    log = _interleaved(seed, drafts, length)
    one = LogRebuild()
    entries: list[tuple[str, int]] = []
    for page in _pages(log, cuts):
        entries.extend(one.add_page(page))

    states, feed = LogFolder(), FeedFolder()
    separate: list[tuple[str, int]] = []
    envelopes: list[tuple[int, dict[str, Any]]] = []
    for _, body in log:
        states.add_envelope(orjson.loads(body))
    for position, body in log:
        envelope = orjson.loads(body)
        envelopes.append((position, envelope))
        separate.extend((user_id, position) for user_id in feed.add_envelope(envelope))

    assert one.states.states() == states.states()
    assert {d: (seq, state) for d, seq, state in one.states.snapshots()} == {
        d: (s.seq, s.to_json()) for d, s in states.states().items()
    }
    assert one.states.count == states.count == len(log)
    assert one.states.position == len(log)
    assert entries == separate  # the same entries in the same order
    assert one.feed.summaries == feed.summaries
    model = expected_feed(envelopes)
    assert {u: [p for user_id, p in entries if user_id == u] for u in USERS} == {
        u: model.get(u, []) for u in USERS
    }


async def _index(store: Store) -> dict[str, list[int]]:
    upto = await store.last_position()
    return {u: [p for p, _ in await store.feed_read(u, 0, upto, 1_000_000)] for u in USERS}


@pytest.mark.parametrize("page", [7, 5000])
async def test_rebuild_writes_what_the_two_passes_write(
    store: Store, page: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "PAGE", page)  # small pages: reads and index writes overlap the fold
    monkeypatch.setattr(runner, "SNAPSHOT_BATCH", 1 if page == 7 else 1000)  # one draft per snapshot write
    monkeypatch.setattr(
        runner, "FEED_WRITE_MIN", 1 if page == 7 else 20_000
    )  # an index write per page or two
    await random_history(store, 600, 21)
    total = await store.last_position()
    seen: list[tuple[int, int]] = []
    assert await rebuild(store, lambda done, of: seen.append((done, of))) == total
    assert seen[-1] == (total, total) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len(seen) == -(-total // page)  # one report per page

    snapshots = await store.list_snapshots()
    assert await store.snapshot_checkpoint() == total
    assert await store.feed_checkpoint() == total
    for snap in snapshots:
        state = await folded(store, snap.stream_id)
        assert state is not None and (snap.seq, snap.state) == (state.seq, state.to_json())
    assert {s.stream_id for s in snapshots} == {r.stream_id for r in await store.read_all(0, 100_000)}
    one_pass = await _index(store)
    assert one_pass == await brute_force_feed(store)

    await store.reset_feed()
    await rebuild_feed(store)  # the separate feed pass
    assert await _index(store) == one_pass


async def test_a_rebuild_that_fails_half_way_leaves_an_index_a_projector_continues(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "PAGE", 10)
    monkeypatch.setattr(runner, "FEED_WRITE_MIN", 1)
    await random_history(store, 600, 22)
    total = await store.last_position()
    assert total > 40
    read_bodies = store.read_bodies  # type: ignore[attr-defined]
    reads = 0

    async def failing(after_position: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        nonlocal reads
        reads += 1
        if reads == 4:
            raise StoreUnavailable("the disk went away")
        result: list[tuple[int, bytes]] = await read_bodies(after_position, limit)
        return result

    monkeypatch.setattr(store, "read_bodies", failing)
    with pytest.raises(StoreUnavailable):
        await rebuild(store)
    monkeypatch.undo()

    checkpoint = await store.feed_checkpoint()
    assert 0 <= checkpoint < total  # what was written before the failure (writes take whole folded pages)
    whole = await brute_force_feed(store)
    assert await _index(store) == {u: [p for p in whole[u] if p <= checkpoint] for u in USERS}
    assert await store.list_snapshots() == []  # reset, none written: a projector folds from the log

    projector = FeedProjector(store)
    await projector.advance()
    assert await _index(store) == whole
