"""The stream's lane (:class:`server.hub.Fanout`): the sockets that keep up are written to straight
from the hub, and each socket still gets every seq once, in order, whatever happens between.

Hypothesis chooses appends (some large enough to fill a socket), sockets subscribing with any
``since`` or going away, a socket that starts closing, partial reads by each peer, lost
notifications (a commit the hub does not hear of, so the next batch leaves a gap), removals, and
points where the tasks run. Checked on the bytes each peer would read: the events after its
``since``, once each, in order, up to the head for a socket still open at the end; nothing after
its sink started closing; every socket that keeps up in the lane.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.memory import MemoryStore
from server.frames import batches_of
from server.hub import Fanout, Hub
from server.subscriber import HIGH_WATER, BacklogBudget, DeliverySocket, Subscriber, TransportSink
from tests.server.fakes import FakeSink, TaskOwner, append, decode_frames

DRAFT = "draft_lane"
SOCKETS = 4

step = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 12), st.sampled_from([10, 200, 30_000])),
    st.tuples(st.just("subscribe"), st.integers(0, SOCKETS - 1), st.floats(0, 1)),
    st.tuples(st.just("unsubscribe"), st.integers(0, SOCKETS - 1), st.just(0)),
    st.tuples(st.just("start_closing"), st.integers(0, SOCKETS - 1), st.just(0)),
    st.tuples(st.just("drain"), st.integers(0, SOCKETS - 1), st.integers(0, 400_000)),
    st.tuples(st.just("lost"), st.integers(1, 3), st.just(0)),
    st.tuples(st.just("run"), st.just(0), st.integers(1, 5)),
)


class Socket:
    """One peer: its sink, its ``since``, and what it held when its sink started closing."""

    def __init__(self, since: int) -> None:
        self.sink = FakeSink(auto_drain=False)
        self.owner = TaskOwner()
        self.since = since
        self.sub: Subscriber | None = None
        self.closed_at: int | None = None  # bytes written when the sink started closing

    @property
    def written(self) -> int:
        return len(self.sink.sent) + len(self.sink.pending)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=40))
def test_every_socket_gets_each_seq_once_in_order(plan: list[tuple[str, int, Any]]) -> None:
    asyncio.run(_scenario(plan))


async def _scenario(plan: list[tuple[str, int, Any]]) -> None:
    store = MemoryStore()
    await store.open()
    hub = Hub(store, max_backlog_bytes=1 << 30, max_backlog_events=1 << 30)
    head = await append(store, DRAFT)
    sockets: dict[int, Socket] = {}
    gone: list[Socket] = []

    def leave(index: int) -> None:
        socket = sockets.pop(index, None)
        if socket is not None and socket.sub is not None:
            hub.unsubscribe(socket.sub)
            socket.owner.cancel()  # as the socket's handler does right after (SocketTasks.cancel_all)
            gone.append(socket)

    try:
        for kind, index, arg in plan:
            if kind == "append":
                head = await append(store, DRAFT, index, arg)
            elif kind == "subscribe":
                leave(index)
                socket = sockets[index] = Socket(int(arg * head))
                socket.sub = hub.subscribe(
                    DRAFT,
                    socket.sink,
                    socket.since,
                    spawn=socket.owner.spawn,
                    request_close=socket.owner.request_close,
                )
            elif kind == "unsubscribe":
                leave(index)
            elif kind == "start_closing":
                socket_or_none = sockets.get(index)
                if socket_or_none is not None and socket_or_none.closed_at is None:
                    socket_or_none.closed_at = socket_or_none.written
                    socket_or_none.sink.start_closing()
            elif kind == "drain":
                if index in sockets:
                    sockets[index].sink.drain(arg)
            elif kind == "lost":
                listener = hub._listeners.get(DRAFT)
                if listener is not None:
                    store.notifier.remove_listener(DRAFT, listener)
                head = await append(store, DRAFT, index)  # the hub does not hear of these
                if listener is not None:
                    store.notifier.add_listener(DRAFT, listener)
            else:
                for _ in range(arg):
                    await asyncio.sleep(0)
        head = await append(store, DRAFT)  # the hub hears of a commit after any lost one
        # every peer reads everything: every open socket reaches the head
        for _ in range(10_000):
            for socket in sockets.values():
                socket.sink.drain()
            if all(
                not s.owner.tasks and (s.closed_at is not None or (s.sub and s.sub.position == head))
                for s in sockets.values()
            ):
                break
            await asyncio.sleep(0)
        head = await append(store, DRAFT)  # the first batch after a socket drained takes it back in
        fanout = hub._streams.get(DRAFT)
        for socket in [*sockets.values(), *gone]:
            socket.sink.drain()
            seqs = [m["seq"] for m in decode_frames(bytes(socket.sink.sent))]
            assert seqs == list(range(socket.since + 1, socket.since + 1 + len(seqs))), (socket.since, seqs)
            assert socket.owner.closes == []
            if socket.closed_at is not None:
                assert socket.written == socket.closed_at  # nothing after the sink started closing
            elif socket in sockets.values():
                assert seqs[-1:] == [head] or socket.since == head
                assert fanout is not None and socket.sub in fanout.lane  # keeps up: in the lane
    finally:
        for socket in [*sockets.values(), *gone]:
            socket.owner.cancel()
        await store.close()


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


def lane_of(hub: Hub) -> Fanout:
    return hub._streams[DRAFT]


async def test_sockets_that_keep_up_are_written_by_the_lane_with_the_same_bytes(
    store: MemoryStore, owner: TaskOwner
) -> None:
    head = await append(store, DRAFT, 3)
    hub = Hub(store, max_backlog_bytes=1 << 20, max_backlog_events=1000)
    sinks = [FakeSink() for _ in range(3)]
    subs = [hub.subscribe(DRAFT, s, 0, spawn=owner.spawn, request_close=owner.request_close) for s in sinks]
    await owner.idle()
    assert set(lane_of(hub).lane) == set(subs) and not lane_of(hub).others
    last = await append(store, DRAFT, 2)
    assert all(s.direct_writes == 1 for s in sinks)
    assert all(s.writes[-1] is sinks[0].writes[-1] for s in sinks)  # one frame object for all
    assert all(s.seqs() == list(range(1, last + 1)) for s in sinks)
    assert all(sub.position == last for sub in subs) and last == head + 2


async def test_a_socket_that_pauses_leaves_the_lane_and_rejoins_once_its_backlog_is_written(
    store: MemoryStore, owner: TaskOwner
) -> None:
    hub = Hub(store, max_backlog_bytes=1 << 30, max_backlog_events=1 << 30)
    slow, fast = FakeSink(auto_drain=False), FakeSink()
    sub_slow = hub.subscribe(DRAFT, slow, 0, spawn=owner.spawn, request_close=owner.request_close)
    sub_fast = hub.subscribe(DRAFT, fast, 0, spawn=owner.spawn, request_close=owner.request_close)
    await owner.idle()
    fanout = lane_of(hub)
    head = 0
    while sub_slow in fanout.lane:  # the write that passes the high-water mark takes it out
        head = await append(store, DRAFT, 1, size=20_000)
    assert slow.buffered > HIGH_WATER and sub_slow.position == head  # that write was made
    head = await append(store, DRAFT, 2, size=20_000)
    assert sub_slow.backlog_bytes > 0 and sub_fast in fanout.lane
    while sub_slow not in fanout.lane:
        slow.drain()
        await asyncio.sleep(0)
    assert not owner.tasks or all(t.done() for t in owner.tasks)
    head = await append(store, DRAFT, 1)
    slow.drain()
    assert slow.seqs() == fast.seqs() == list(range(1, head + 1))


async def test_a_presence_frame_whose_write_pauses_a_member_reaches_it_once(
    store: MemoryStore, owner: TaskOwner
) -> None:
    """The member leaves the lane from inside the write (pause_writing); it must not then be
    offered, as one of the others, the frame it was just written (a review found it twice)."""
    hub = Hub(store, max_backlog_bytes=1 << 30, max_backlog_events=1 << 30)
    await append(store, DRAFT, 1)
    slow, other = FakeSink(auto_drain=False), FakeSink()
    sub = hub.subscribe(DRAFT, slow, 1, spawn=owner.spawn, request_close=owner.request_close)
    hub.subscribe(DRAFT, other, 1, spawn=owner.spawn, request_close=owner.request_close)
    await owner.idle()
    assert sub in lane_of(hub).lane
    frame = b"\x81\x7f" + (HIGH_WATER + 10).to_bytes(8, "big") + b"P" * (HIGH_WATER + 10)
    assert hub.offer_message(DRAFT, frame) == 2
    assert sub not in lane_of(hub).lane  # the write passed the high-water mark
    assert sub.backlog_bytes == 0
    for _ in range(5):
        slow.drain()
        await asyncio.sleep(0)
    assert sum(1 for w in slow.writes if w == frame) == 1
    assert sum(1 for w in other.writes if w == frame) == 1


async def test_a_gap_dissolves_the_lane_and_every_socket_reads_the_log_again(
    store: MemoryStore, owner: TaskOwner
) -> None:
    hub = Hub(store, max_backlog_bytes=1 << 20, max_backlog_events=1000)
    sinks = [FakeSink() for _ in range(3)]
    for sink in sinks:
        hub.subscribe(DRAFT, sink, 0, spawn=owner.spawn, request_close=owner.request_close)
    await owner.idle()
    head = await append(store, DRAFT, 2)
    fanout = lane_of(hub)
    assert len(fanout.lane) == 3 and fanout.position == head
    [repeat] = batches_of(await store.read(DRAFT, head - 1, 10), 0.0)
    fanout.publish(repeat)  # a batch the members already have is nothing to them
    assert len(fanout.lane) == 3 and all(s.seqs() == [1, 2] for s in sinks)
    listener = hub._listeners[DRAFT]
    store.notifier.remove_listener(DRAFT, listener)
    await append(store, DRAFT, 2)  # a lost notification: the hub hears nothing of 3 and 4
    store.notifier.add_listener(DRAFT, listener)
    head = await append(store, DRAFT, 1)  # 5 does not continue the lane's 2
    assert not fanout.lane  # dissolved: each socket reads the log from 2
    await owner.idle()
    assert len(fanout.lane) == 3 and fanout.position == head  # and the lane re-forms
    head = await append(store, DRAFT, 1)
    for sink in sinks:
        assert sink.seqs() == list(range(1, head + 1))


async def test_a_sink_without_direct_writes_and_a_shared_socket_stay_out_of_the_lane(
    store: MemoryStore, owner: TaskOwner
) -> None:
    hub = Hub(store, max_backlog_bytes=1 << 20, max_backlog_events=1000)
    plain, shared = FakeSink(direct=False), FakeSink()
    a = hub.subscribe(DRAFT, plain, 0, spawn=owner.spawn, request_close=owner.request_close)
    b = hub.subscribe(
        DRAFT,
        shared,
        0,
        spawn=owner.spawn,
        request_close=owner.request_close,
        budget=BacklogBudget(1 << 20, 1000),
    )
    await owner.idle()
    head = await append(store, DRAFT, 4)
    assert not lane_of(hub).lane and lane_of(hub).others == {a, b}
    assert plain.direct_writes == shared.direct_writes == 0
    assert plain.seqs() == shared.seqs() == list(range(1, head + 1))


async def test_a_member_whose_sink_starts_closing_is_written_nothing_more(
    store: MemoryStore, owner: TaskOwner
) -> None:
    hub = Hub(store, max_backlog_bytes=1 << 20, max_backlog_events=1000)
    closing, other = FakeSink(), FakeSink()
    sub = hub.subscribe(DRAFT, closing, 0, spawn=owner.spawn, request_close=owner.request_close)
    hub.subscribe(DRAFT, other, 0, spawn=owner.spawn, request_close=owner.request_close)
    await owner.idle()
    await append(store, DRAFT, 1)
    assert sub in lane_of(hub).lane
    closing.start_closing()  # a close decided: the member leaves at once
    assert sub not in lane_of(hub).lane and sub.position == 1
    head = await append(store, DRAFT, 2)
    assert closing.seqs() == [1] and closing.direct_writes == 1
    assert other.seqs() == list(range(1, head + 1))


async def test_a_socket_ahead_of_the_lane_joins_only_once_level_with_it(
    store: MemoryStore, owner: TaskOwner
) -> None:
    """A socket that went live past the lane's position (it read the log beyond a batch the hub
    has not heard of yet: a shared store publishes after the commit) stays out of the lane until
    the batch makes the two level, and is not sent that batch again."""
    hub = Hub(store, max_backlog_bytes=1 << 20, max_backlog_events=1000)
    first = FakeSink()
    hub.subscribe(DRAFT, first, 0, spawn=owner.spawn, request_close=owner.request_close)
    await owner.idle()
    await append(store, DRAFT, 1)
    fanout = lane_of(hub)
    listener = hub._listeners[DRAFT]
    store.notifier.remove_listener(DRAFT, listener)
    head = await append(store, DRAFT, 2)  # committed, not yet published to this hub
    store.notifier.add_listener(DRAFT, listener)
    ahead = FakeSink()
    sub = hub.subscribe(DRAFT, ahead, head, spawn=owner.spawn, request_close=owner.request_close)
    await owner.idle()
    assert sub.seam.live and sub.position == head and fanout.position == 1
    assert sub not in fanout.lane  # ahead of the lane: it would be sent 2 and 3 again
    [late] = batches_of(await store.read(DRAFT, 1, 10), 0.0)
    fanout.publish(late)  # the publication arrives: level
    assert sub in fanout.lane and fanout.position == head
    last = await append(store, DRAFT, 1)
    assert ahead.seqs() == [last] and first.seqs() == list(range(1, last + 1))


class _Transport(asyncio.Transport):
    """Just enough of a transport for a :class:`TransportSink` (nothing is sent)."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol: asyncio.BaseProtocol = asyncio.Protocol()
        self.data = bytearray()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.data.extend(data)

    def is_closing(self) -> bool:
        return False


async def test_aiohttps_own_close_stops_the_direct_writes_before_its_close_frame() -> None:
    """aiohttp sends a Close frame of its own (1007, 1009) through ``close()``: a
    :class:`DeliverySocket` tells its sink first, and the lane's member leaves before the frame."""
    socket = DeliverySocket()
    stopped: list[str] = []
    sink = TransportSink(_Transport(), socket)
    assert sink.attach_direct(lambda: stopped.append("stopped")) is not None
    with pytest.raises(RuntimeError):  # not prepared: aiohttp's close refuses, after the hook ran
        await socket.close(code=1009)
    assert stopped == ["stopped"] and sink.closing
    assert sink.attach_direct(lambda: None) is None  # closing: no direct writes any more
    plain = TransportSink(_Transport(), web.WebSocketResponse())  # aiohttp's own class
    assert plain.attach_direct(lambda: None) is None  # no hook before its Close frames: no lane


async def test_a_transport_that_pauses_stops_the_direct_writes_from_within_the_write() -> None:
    transport = _Transport()
    sink = TransportSink(transport, DeliverySocket())
    stopped: list[str] = []
    writer = sink.attach_direct(lambda: stopped.append("stopped"))
    assert writer is transport
    transport.get_protocol().pause_writing()  # type: ignore[attr-defined]  # what the transport calls
    assert stopped == ["stopped"] and sink.attach_direct(lambda: None) is None  # paused
    transport.get_protocol().resume_writing()  # type: ignore[attr-defined]
    assert sink.attach_direct(lambda: stopped.append("again")) is not None
    sink.detach_direct()
    transport.get_protocol().pause_writing()  # type: ignore[attr-defined]
    assert stopped == ["stopped"]  # detached: not called
