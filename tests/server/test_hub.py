"""The hub and its subscribers in-process: a MemoryStore, fake sinks, no sockets, no server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from eventstore.memory import MemoryStore
from server.frames import batches_of, text_frame, text_frames
from server.hub import Hub
from server.subscriber import CATCH_UP_PAGE, HIGH_WATER, Subscriber
from tests.server.fakes import FakeSink, TaskOwner, append, decode_frames

DRAFT = "draft_hub"


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def owner() -> AsyncIterator[TaskOwner]:
    o = TaskOwner()
    yield o
    o.cancel()


def make_hub(store: MemoryStore, max_bytes: int = 1 << 20, max_events: int = 10_000) -> Hub:
    return Hub(store, max_backlog_bytes=max_bytes, max_backlog_events=max_events)


def subscribe(hub: Hub, owner: TaskOwner, sink: FakeSink, since: int) -> Subscriber:
    return hub.subscribe(DRAFT, sink, since, spawn=owner.spawn, request_close=owner.request_close)


async def test_every_subscriber_gets_since_plus_one_to_head_then_live(
    store: MemoryStore, owner: TaskOwner
) -> None:
    await append(store, DRAFT, 7)
    hub = make_hub(store)
    sinks = {since: FakeSink() for since in (0, 3, 7)}
    subs = [subscribe(hub, owner, sink, since) for since, sink in sinks.items()]
    assert hub.subscriber_count == 3
    head = await append(store, DRAFT, 2)  # while the catch-ups run
    await owner.idle()
    head = await append(store, DRAFT, 3)
    for since, sink in sinks.items():  # live commits reach a socket that keeps up synchronously
        assert sink.seqs() == list(range(since + 1, head + 1))
    assert all(sub.seam.live for sub in subs)


async def test_a_live_commit_is_framed_once_for_every_socket(store: MemoryStore, owner: TaskOwner) -> None:
    await append(store, DRAFT, 1)
    hub = make_hub(store)
    sinks = [FakeSink() for _ in range(5)]
    for sink in sinks:
        subscribe(hub, owner, sink, 1)
    await owner.idle()
    await append(store, DRAFT, 2)
    written = [sink.writes[-1] for sink in sinks]
    assert all(w is written[0] for w in written)  # the same bytes object: no per-socket framing
    assert [sink.seqs() for sink in sinks] == [[2, 3]] * 5


async def test_unsubscribed_subscriber_writes_nothing_and_the_listener_goes(
    store: MemoryStore, owner: TaskOwner
) -> None:
    hub = make_hub(store)
    sink = FakeSink()
    sub = subscribe(hub, owner, sink, 0)
    await owner.idle()
    await append(store, DRAFT, 1)
    assert store.notifier.listener_count(DRAFT) == 1
    hub.unsubscribe(sub)
    hub.unsubscribe(sub)  # idempotent
    writes = len(sink.writes)
    await append(store, DRAFT, 3)
    assert len(sink.writes) == writes and sub.closing
    assert store.notifier.listener_count(DRAFT) == 0 and hub.subscriber_count == 0


async def test_a_slow_socket_gets_a_backlog_and_loses_nothing_when_it_reads_again(
    store: MemoryStore, owner: TaskOwner
) -> None:
    hub = make_hub(store)
    slow, fast = FakeSink(auto_drain=False), FakeSink()
    sub_slow = subscribe(hub, owner, slow, 0)
    subscribe(hub, owner, fast, 0)
    await owner.idle()
    head = 0
    while slow.buffered < HIGH_WATER:
        head = await append(store, DRAFT, 1, size=20_000)
    head = await append(store, DRAFT, 3, size=20_000)
    assert sub_slow.backlog_bytes > 0  # behind: the backlog holds what the sink cannot take
    assert fast.seqs() == list(range(1, head + 1))  # the fast one is not held up
    while len(slow.seqs()) < head:
        slow.drain()
        await asyncio.sleep(0)  # let the backlog writer run (a yield, not a wait)
    await slow.wait_until(lambda: len(slow.seqs()) == head)
    assert slow.seqs() == list(range(1, head + 1)) and not owner.closes


@pytest.mark.parametrize(("size", "max_bytes", "max_events"), [(20_000, 100_000, 10_000), (50, 1 << 20, 5)])
async def test_backlog_overflow_closes_with_1013_and_writes_nothing_more(
    store: MemoryStore, owner: TaskOwner, size: int, max_bytes: int, max_events: int
) -> None:
    hub = make_hub(store, max_bytes=max_bytes, max_events=max_events)
    sink = FakeSink(auto_drain=False)
    sub = subscribe(hub, owner, sink, 0)
    await owner.idle()
    sink.pending.extend(b"\0" * HIGH_WATER)  # the socket is already behind
    for _ in range(1000):
        await append(store, DRAFT, 1, size=size)
        if owner.closes:
            break
        assert sub.backlog_bytes <= max_bytes
    assert owner.closes == [(1013, b"too slow: reconnect with since")]
    assert sub.closing and sub.backlog_bytes == 0
    writes = len(sink.writes)
    await append(store, DRAFT, 5)
    sink.drain()
    await owner.idle()
    assert len(sink.writes) == writes


async def test_the_backlog_is_bounded_in_bytes_not_frames(store: MemoryStore, owner: TaskOwner) -> None:
    """Many small events fit where a few large ones overflow (same byte bound)."""
    hub = make_hub(store, max_bytes=200_000, max_events=100_000)
    small, large = FakeSink(auto_drain=False), FakeSink(auto_drain=False)
    subscribe(hub, owner, small, 0)
    await owner.idle()
    small.pending.extend(b"\0" * HIGH_WATER)
    for _ in range(1000):  # 1,000 events of ~150 bytes: about 150 KB
        await append(store, DRAFT, 1, size=10)
    assert owner.closes == []
    other, owner2 = "draft_large", TaskOwner()
    hub.subscribe(other, large, 0, spawn=owner2.spawn, request_close=owner2.request_close)
    await owner2.idle()
    large.pending.extend(b"\0" * HIGH_WATER)
    for _ in range(20):  # 20 events of 20 KB: 400 KB
        await append(store, other, 1, size=20_000)
    owner2.cancel()
    assert owner2.closes == [(1013, b"too slow: reconnect with since")]


async def test_catch_up_waits_for_a_slow_socket_instead_of_overflowing(
    store: MemoryStore, owner: TaskOwner
) -> None:
    head = await append(store, DRAFT, CATCH_UP_PAGE * 2 + 10, size=200)
    hub = make_hub(store, max_bytes=50_000, max_events=10)  # far less than the catch-up
    sink = FakeSink(auto_drain=False, low_water=1000)
    subscribe(hub, owner, sink, 0)
    for _ in range(100):
        await sink.wait_until(lambda: sink.buffered > 0 or len(sink.seqs()) == head)
        if len(sink.seqs()) == head:
            break
        sink.drain()
    assert sink.seqs() == list(range(1, head + 1)) and owner.closes == []


async def test_a_gap_in_live_batches_reads_the_log_again(store: MemoryStore, owner: TaskOwner) -> None:
    sink = FakeSink()
    sub = Subscriber(
        DRAFT,
        sink,
        0,
        read_page=store.read_stream_bodies,
        spawn=owner.spawn,
        request_close=owner.request_close,
        max_backlog_bytes=1 << 20,
        max_backlog_events=1000,
    )
    sub.start()
    await owner.idle()
    assert sub.seam.live and owner.spawned == 1
    await append(store, DRAFT, 4)  # this subscriber is not on the notifier: nothing offered
    records = await store.read(DRAFT, 3, 10)
    [late] = batches_of(records, 0.0)  # only seq 4 arrives: 1..3 were "lost"
    sub.offer(late)
    assert not sub.seam.live  # back to catch-up
    await owner.idle()
    assert sink.seqs() == [1, 2, 3, 4] and sub.seam.live
    assert owner.spawned == 2 and not owner.tasks  # finished tasks are not kept


async def test_a_sink_that_starts_closing_gets_no_more_writes(store: MemoryStore, owner: TaskOwner) -> None:
    hub = make_hub(store)
    sink = FakeSink()
    sub = subscribe(hub, owner, sink, 0)
    await owner.idle()
    await append(store, DRAFT, 1)
    sink.start_closing()
    await append(store, DRAFT, 2)
    assert sink.seqs() == [1] and sub.closing  # the refused write closed the subscriber
    await append(store, DRAFT, 2)
    assert sink.refused == 1  # and it tried no more


async def test_presence_frames_ride_the_backlog_in_order_and_count_against_its_bytes(
    store: MemoryStore, owner: TaskOwner
) -> None:
    """Hub.offer_message (presence, API.md v2): the same bytes to every subscriber, after what is
    already queued for a slow one, within the backlog's byte bound; no seq, no lag observed."""
    hub = make_hub(store, max_bytes=HIGH_WATER)
    slow, fast = FakeSink(auto_drain=False), FakeSink()
    sub_slow = subscribe(hub, owner, slow, 0)
    subscribe(hub, owner, fast, 0)
    await owner.idle()
    while slow.buffered < HIGH_WATER:
        await append(store, DRAFT, 1, size=20_000)
    head = await append(store, DRAFT, 1, size=20_000)  # in the slow one's backlog
    frame = text_frame(b'{"type":"presence","event":"join","user_id":"bob"}')
    assert hub.offer_message(DRAFT, frame) == 2
    assert fast.writes[-1] is frame  # framed once, the same object for every socket
    assert sub_slow.backlog_bytes > len(frame)  # queued behind the event, not jumped ahead
    while not any(m.get("type") == "presence" for m in decode_frames(bytes(slow.sent))):
        slow.drain()
        await asyncio.sleep(0)
    kinds = [m.get("seq", m["type"]) for m in decode_frames(bytes(slow.sent))]
    assert kinds[-2:] == [head, "presence"]
    # a presence frame that would overflow the bound closes the slow socket, like an event would
    while slow.buffered < HIGH_WATER:
        await append(store, DRAFT, 1, size=20_000)
    for _ in range(HIGH_WATER // len(frame) + 2):
        hub.offer_message(DRAFT, frame)
    assert owner.closes and owner.closes[0][0] == 1013 and not fast.closing
    assert hub.offer_message("draft_nobody", frame) == 0
    await owner.idle()
    assert owner.failures == []  # the backlog writer spawned just before the close ends quietly


async def test_a_subscriber_at_the_live_head_goes_live_without_reading_the_log(
    store: MemoryStore, owner: TaskOwner
) -> None:
    """Issue 16: the sockets of a connect storm do not each read the log to find nothing."""
    head = await append(store, DRAFT, 4)
    hub = make_hub(store)
    first = FakeSink()
    subscribe(hub, owner, first, head)
    await owner.idle()  # the first one catches up (it cannot know the head) and goes live
    assert owner.spawned == 1
    late = [FakeSink() for _ in range(3)]
    subs = [subscribe(hub, owner, sink, head) for sink in late]
    assert owner.spawned == 1 and not owner.tasks  # no catch-up task, no log read
    assert all(sub.seam.live for sub in subs)
    behind = FakeSink()
    subscribe(hub, owner, behind, head - 2)  # below the live head: must catch up
    assert owner.spawned == 2
    await owner.idle()
    new_head = await append(store, DRAFT, 2)
    for sink in (first, *late):
        assert sink.seqs() == list(range(head + 1, new_head + 1))
    assert behind.seqs() == list(range(head - 1, new_head + 1))


async def test_the_live_head_follows_commits_offered_while_the_first_catch_up_runs(
    store: MemoryStore, owner: TaskOwner
) -> None:
    head = await append(store, DRAFT, 3)
    hub = make_hub(store)
    first = FakeSink()
    subscribe(hub, owner, first, 0)  # catching up (its task has not run yet)
    new_head = await append(store, DRAFT, 2)  # offered to the listener: the live head
    assert new_head == head + 2
    second = FakeSink()
    subscribe(hub, owner, second, new_head)  # at the live head: live at once
    third = FakeSink()
    subscribe(hub, owner, third, head)  # below it: catches up the two it would miss
    assert owner.spawned == 2
    await owner.idle()
    last = await append(store, DRAFT, 1)
    assert first.seqs() == list(range(1, last + 1))
    assert second.seqs() == [last]
    assert third.seqs() == list(range(head + 1, last + 1))


async def test_the_live_head_is_forgotten_with_the_last_subscriber(
    store: MemoryStore, owner: TaskOwner
) -> None:
    head = await append(store, DRAFT, 2)
    hub = make_hub(store)
    sub = subscribe(hub, owner, FakeSink(), head)
    await owner.idle()
    hub.unsubscribe(sub)  # the listener goes: commits are no longer seen
    later = await append(store, DRAFT, 2)
    sink = FakeSink()
    subscribe(hub, owner, sink, head)  # the hub cannot know the head: the log is read
    assert owner.spawned == 2
    await owner.idle()
    assert sink.seqs() == list(range(head + 1, later + 1))


class CountingStore(MemoryStore):
    """A real in-memory store that counts the catch-up pages read from it."""

    def __init__(self) -> None:
        super().__init__()
        self.pages_read = 0

    async def read_stream_bodies(self, stream_id: str, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        self.pages_read += 1
        return await super().read_stream_bodies(stream_id, after_seq, limit)


@pytest.mark.parametrize("cache_pages", [1, 2, 10])
async def test_kept_pages_give_every_later_catch_up_exactly_its_events(
    owner: TaskOwner, cache_pages: int
) -> None:
    """Framed pages kept by one catch-up serve the next ones (any since, any cache bound) with
    no gap and no repeat, and spare them reading those pages again."""
    store = CountingStore()
    await store.open()
    head = await append(store, DRAFT, CATCH_UP_PAGE * 3 + 17, size=30)
    # the largest page of this stream (its seqs have the most digits)
    page_bytes = len(text_frames(await store.read_stream_bodies(DRAFT, CATCH_UP_PAGE * 2, CATCH_UP_PAGE)))
    hub = Hub(
        store, max_backlog_bytes=1 << 20, max_backlog_events=10_000, page_cache_bytes=cache_pages * page_bytes
    )
    assert hub.pages is not None
    first = FakeSink()
    subscribe(hub, owner, first, 0)
    await owner.idle()
    assert first.seqs() == list(range(1, head + 1))
    cold = store.pages_read
    assert len(hub.pages) >= 1
    for since in (0, CATCH_UP_PAGE, 37, CATCH_UP_PAGE * 2 - 1, head - 5, head):
        store.pages_read = 0
        sink = FakeSink()
        subscribe(hub, owner, sink, since)
        head = await append(store, DRAFT, 2)  # live commits while it catches up
        await owner.idle()
        assert sink.seqs() == list(range(since + 1, head + 1)), since
        if since == 0 and cache_pages == 10:
            assert store.pages_read < cold  # the full pages came from memory
    assert hub.pages.bytes <= cache_pages * page_bytes
    await store.close()


async def test_no_page_is_kept_without_a_cache(store: MemoryStore, owner: TaskOwner) -> None:
    head = await append(store, DRAFT, CATCH_UP_PAGE + 1)
    hub = make_hub(store)
    assert hub.pages is None
    sink = FakeSink()
    subscribe(hub, owner, sink, 0)
    await owner.idle()
    assert sink.seqs() == list(range(1, head + 1))
