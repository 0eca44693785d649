"""The feed subscription for ``subscribe_me``: catch-up then live, no gap and no repeat.

The seam alone (pure, hypothesis over interleavings), then the subscription against a running
app's feed projector with a fake sink, while other writers keep appending.
"""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.feed_index import FeedItem
from server.feed_subscription import RESYNC, FeedSeam, FeedSubscription
from tests.server.inprocess import running_app


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[int], list[int], int, int, list[int], int]:
    """(the user's entry positions, index advance boundaries, head index, after, pages, buffer)."""
    n = draw(st.integers(1, 60))
    entries = sorted(draw(st.sets(st.integers(1, n))))
    cuts = sorted(draw(st.sets(st.integers(1, n))) | {n})
    head = draw(st.integers(0, len(cuts)))
    head_position = cuts[head - 1] if head else 0
    after = draw(st.integers(0, head_position))
    pages = draw(st.lists(st.integers(0, 3), min_size=1, max_size=20))  # advances between reads
    buffer = draw(st.sampled_from([3, 10, 10_000]))  # bytes: each body is 1 byte
    return entries, cuts, head, after, pages, buffer


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.integers(1, 4))
def test_the_seam_hands_out_every_entry_after_after_once_in_order(
    scenario: tuple[list[int], list[int], int, int, list[int], int], page_size: int
) -> None:
    entries, cuts, head, after, pauses, buffer = scenario
    index_at = cuts[head - 1] if head else 0  # the index position when the subscription starts
    next_cut = head
    seam = FeedSeam(after, buffer)
    out: list[int] = []

    def advance(times: int) -> None:
        nonlocal next_cut, index_at
        for _ in range(times):
            if next_cut >= len(cuts):
                return
            upto = cuts[next_cut]
            items = [FeedItem(p, b"x") for p in entries if index_at < p <= upto]
            index_at = upto
            next_cut += 1
            out.extend(i.position for i in seam.on_live(upto, items))

    target = index_at
    pause = iter(pauses * 50)
    for _ in range(200):  # catch-up rounds (resyncs)
        while True:
            page = [FeedItem(p, b"x") for p in entries if seam.position < p <= target][:page_size]
            full = len(page) >= page_size
            out.extend(i.position for i in seam.on_page(page, None if full else target))
            advance(next(pause, 0))
            if not full:
                break
        merged = seam.go_live()
        if merged is not RESYNC:
            out.extend(i.position for i in merged)
            break
        target = index_at
    assert seam.live
    advance(len(cuts))
    assert out == [p for p in entries if p > after]


async def test_a_subscription_catches_up_then_goes_live_while_others_append() -> None:
    async with running_app() as srv:
        for k in range(5):
            await srv.create("alice", f"before {k}")
        got: list[tuple[int, bytes]] = []
        sub = FeedSubscription(
            srv.state.feed, "alice", lambda item: got.append((item.position, item.body)), page=2
        )
        head = await sub.start(after=0)
        assert head == await srv.store.last_position()

        async def writer() -> None:
            for k in range(15):
                await srv.create("alice", f"during {k}")
                await srv.create("bob", "not alice's")

        writing = asyncio.create_task(writer())
        await sub.catch_up()
        await writing
        last = await srv.store.last_position()
        assert await srv.state.feed.reached(last, 10)
        sub.close()
        await srv.create("alice", "after close")
        await srv.state.feed.reached(await srv.store.last_position(), 10)
        rows = await srv.store.feed_read("alice", 0, last, 1000)
    assert [p for p, _ in got] == [p for p, _ in rows] and len(got) == 20
    assert got == rows  # the event's own bytes, once each, in position order


async def test_without_after_a_subscription_starts_at_the_head() -> None:
    async with running_app() as srv:
        await srv.create("alice", "old")
        got: list[int] = []
        sub = FeedSubscription(srv.state.feed, "alice", lambda item: got.append(item.position))
        head = await sub.start()
        await sub.catch_up()
        d = await srv.create("alice", "new")
        assert await srv.state.feed.reached(await srv.store.last_position(), 10)
        sub.close()
    assert got == [head + 1] and d
