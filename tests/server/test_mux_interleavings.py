"""Many subscriptions writing into one sink (a ``/v1/ws`` socket), for arbitrary interleavings.

Hypothesis chooses appends to several streams, (re)subscriptions with any ``since``,
unsubscriptions, partial drains of the socket and points where the catch-up tasks run. Like the
session (:mod:`server.ws_mux`), a ``subscribed`` marker is written before the hub registers the
subscriber, and an ``unsubscribed`` marker after it is closed. Checked on the bytes the peer
would read: after each marker ``subscribed(since=k)`` the stream's events are ``k+1, k+2, …``
once each with no gap, up to the head for the subscription still open at the end; after
``unsubscribed`` none of the stream's events follows; the socket's one backlog budget is the
sum of its subscribers' backlogs and returns to zero.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.memory import MemoryStore
from server.frames import text_frame
from server.hub import Hub
from server.subscriber import HIGH_WATER, BacklogBudget, Subscriber
from tests.server.fakes import FakeSink, TaskOwner, append, decode_frames

STREAMS = ("draft_a", "draft_b", "draft_c")

step = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 2), st.integers(1, 30)),
    st.tuples(st.just("subscribe"), st.integers(0, 2), st.floats(0, 1)),
    st.tuples(st.just("unsubscribe"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("drain"), st.just(0), st.integers(0, 5000)),
    st.tuples(st.just("run"), st.just(0), st.integers(1, 5)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=40))
def test_each_stream_is_exact_between_its_markers(plan: list[tuple[str, int, Any]]) -> None:
    asyncio.run(_scenario(plan))


async def _scenario(plan: list[tuple[str, int, Any]]) -> None:
    store = MemoryStore()
    await store.open()
    owner = TaskOwner()

    hub = Hub(store, max_backlog_bytes=1 << 30, max_backlog_events=1 << 30)
    sink = FakeSink(auto_drain=False)
    budget = BacklogBudget(1 << 30, 1 << 30)
    subs: dict[str, Subscriber] = {}
    heads = dict.fromkeys(STREAMS, 0)
    for stream in STREAMS:
        heads[stream] = await append(store, stream)

    def marker(kind: str, stream: str, since: int = 0) -> None:
        sink.write(text_frame(orjson.dumps({"type": kind, "draft_id": stream, "since": since})))

    try:
        for kind, index, arg in plan:
            stream = STREAMS[index]
            if kind == "append":
                heads[stream] = await append(store, stream, arg)
            elif kind == "subscribe":
                if stream in subs:
                    hub.unsubscribe(subs.pop(stream))
                since = int(arg * heads[stream])
                marker("subscribed", stream, since)
                subs[stream] = hub.subscribe(
                    stream, sink, since, spawn=owner.spawn, request_close=owner.request_close, budget=budget
                )
            elif kind == "unsubscribe":
                if stream in subs:
                    hub.unsubscribe(subs.pop(stream))
                marker("unsubscribed", stream)
            elif kind == "drain":
                sink.drain(arg)
            else:
                for _ in range(arg):
                    await asyncio.sleep(0)
            assert budget.bytes == sum(s.backlog_bytes for s in subs.values())
        # the peer reads everything: every open subscription reaches its head
        for _ in range(10_000):
            sink.drain()
            if not owner.tasks and all(s.seam.position == heads[n] and s.seam.live for n, s in subs.items()):
                break
            await asyncio.sleep(0)
        sink.drain()
        assert owner.closes == []
        assert budget.bytes == 0 and budget.events == 0
        _check(decode_frames(bytes(sink.sent)), {n: heads[n] for n in subs})
    finally:
        owner.cancel()
        await store.close()


def _check(messages: list[dict[str, object]], open_heads: dict[str, int]) -> None:
    expected: dict[str, int | None] = dict.fromkeys(STREAMS)  # next seq; None = not subscribed
    for message in messages:
        stream = str(message["draft_id"])
        if message["type"] == "subscribed":
            since = message["since"]
            assert isinstance(since, int)
            expected[stream] = since + 1
        elif message["type"] == "unsubscribed":
            expected[stream] = None
        else:
            assert expected[stream] is not None, f"an event of {stream} after unsubscribed"
            assert message["seq"] == expected[stream], (stream, message["seq"], expected[stream])
            expected[stream] = int(str(message["seq"])) + 1
    for stream, head in open_heads.items():
        assert expected[stream] == head + 1, (stream, expected[stream], head)


async def test_one_budget_for_the_sum_of_the_drafts_and_a_bounded_transport() -> None:
    """Ten live subscriptions on one sink that the peer stops reading: the transport holds about
    ``HIGH_WATER`` plus one batch, the backlogs together stay within the one budget, and the
    subscription that would pass it asks for 1013 (each alone is far below the bound)."""
    store = MemoryStore()
    await store.open()
    owner = TaskOwner()

    streams = [f"draft_{i}" for i in range(10)]
    hub = Hub(store, max_backlog_bytes=1 << 30, max_backlog_events=1 << 30)
    sink = FakeSink(auto_drain=False)
    budget = BacklogBudget(1 << 20, 1 << 30)
    try:
        subs = []
        for stream in streams:
            head = await append(store, stream)
            sub = hub.subscribe(
                stream, sink, head, spawn=owner.spawn, request_close=owner.request_close, budget=budget
            )
            subs.append(sub)
        for _ in range(100):
            await asyncio.sleep(0)  # the catch-ups find nothing and go live
        assert all(s.seam.live for s in subs)
        batch = 0
        for _ in range(40):
            for stream in streams:
                before = sink.buffered
                await append(store, stream, 1, 20_000)
                batch = max(batch, sink.buffered - before)
                await asyncio.sleep(0)  # the backlog writers run
                assert sink.buffered <= HIGH_WATER + batch
                assert budget.bytes <= budget.max_bytes
                assert budget.bytes == sum(s.backlog_bytes for s in subs)
            if owner.closes:
                break
        assert owner.closes and {code for code, _reason in owner.closes} == {1013}
        assert max(s.backlog_bytes for s in subs) < budget.max_bytes // 2
    finally:
        owner.cancel()
        await store.close()
