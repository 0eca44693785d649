"""``subscribe_me`` on ``GET /v1/ws`` in process (API.md v2 "The caller's own feed")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from eventstore.memory import MemoryStore
from server.state import AppState
from tests.server.test_ws_mux import Mux, connect
from tests.server.wsclient import Client, serving_app


@pytest.fixture
async def app() -> AsyncIterator[tuple[Client, MemoryStore]]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with serving_app() as (server, store), aiohttp.ClientSession(timeout=timeout) as http:
        yield Client(server, http), store


async def _subscribe_me(mux: Mux, after: Any = "absent") -> dict[str, Any]:
    message: dict[str, Any] = {"type": "subscribe_me"}
    if after != "absent":
        message["after"] = after
    await mux.send(message)
    return await mux.until(lambda m: m["type"] in ("subscribed_me", "error"))


def _positions(mux: Mux) -> list[int]:
    return [m["position"] for m in mux.received if m["type"] == "me"]


async def test_catch_up_then_live_with_no_gap_and_no_repeat(app: tuple[Client, MemoryStore]) -> None:
    c, store = app
    for _ in range(3):
        await c.create("bob")
    mine = [await c.create("alice") for _ in range(2)]

    async def writers() -> None:
        for _ in range(10):
            await c.create("alice")
            await c.create("bob")  # not alice's

    writing = asyncio.create_task(writers())  # appends while the feed catches up and goes live
    mux = await connect(c, "user_id=alice")
    answer = await _subscribe_me(mux, 0)
    assert answer["type"] == "subscribed_me" and answer["last_position"] >= 5
    await writing
    last = await store.last_position()
    assert await c.server.app[AppState.KEY].feed.reached(last, 10)
    expected = [p for p, _ in await store.feed_read("alice", 0, last, 1000)]
    assert len(expected) == 12
    await mux.until(lambda m: m["type"] == "me" and m["position"] == expected[-1], after=0)
    assert _positions(mux) == expected
    first = next(m for m in mux.received if m["type"] == "me")
    assert first["event"]["type"] == "collab.draft_created" and first["event"]["draft_id"] == mine[0]
    order = [m["type"] for m in mux.received]
    assert order.index("subscribed_me") < order.index("me")
    await mux.ws.close()


async def test_without_after_the_feed_starts_now(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    await c.create("alice")
    mux = await connect(c, "user_id=alice")
    answer = await _subscribe_me(mux)
    assert answer["last_position"] == 1
    d = await c.create("alice")
    got = await mux.until(lambda m: m["type"] == "me")
    assert got["position"] == 2 and got["event"]["draft_id"] == d
    await mux.ws.close()


async def test_subscribe_me_again_restarts_from_the_new_after(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    for _ in range(3):
        await c.create("alice")
    mux = await connect(c, "user_id=alice")
    await _subscribe_me(mux, 0)
    await mux.until(lambda m: m["type"] == "me" and m["position"] == 3, after=0)
    start = len(mux.received)
    await _subscribe_me(mux, 1)
    await mux.until(lambda m: m["type"] == "me" and m["position"] == 3, after=start)
    again = [m["position"] for m in mux.received[start:] if m["type"] == "me"]
    assert again == [2, 3]
    await mux.ws.close()


@pytest.mark.parametrize("after", ["1", 1.5, -1, True, 2**62 + 1, [1], {"a": 1}])
async def test_a_bad_after_is_bad_message_and_the_socket_stays_open(
    app: tuple[Client, MemoryStore], after: Any
) -> None:
    c, _ = app
    mux = await connect(c, "user_id=alice")
    answer = await _subscribe_me(mux, after)
    assert answer["type"] == "error" and answer["code"] == "bad_message", answer
    await mux.send({"type": "ping"})
    assert (await mux.until(lambda m: m["type"] == "pong"))["type"] == "pong"
    await mux.ws.close()


async def test_draft_subscriptions_and_the_feed_share_one_socket(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    d = await c.create("alice")
    mux = await connect(c, "user_id=bob")
    await _subscribe_me(mux)
    await c.post(f"/v1/collab/drafts/{d}/collaborators", "alice", {"user_id": "bob", "role": "viewer"})
    added = await mux.until(lambda m: m["type"] == "me")
    assert added["event"]["type"] == "collab.collaborator_added"
    assert (await mux.subscribe(d))["type"] == "subscribed"
    await c.segment(d, "alice", "hello")
    await mux.until(lambda m: m.get("seq") == 3 and m.get("draft_id") == d)
    assert [m["position"] for m in mux.received if m["type"] == "me"] == [2]  # a segment is nobody's feed
    await mux.ws.close()


class _Closer:
    def __init__(self) -> None:
        self.requests: list[tuple[int, bytes]] = []

    def request(self, code: int, reason: bytes) -> None:
        self.requests.append((code, reason))


class _Tasks:
    def __init__(self) -> None:
        self.running: list[asyncio.Task[None]] = []

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self.running.append(task)
        return task


async def test_a_socket_too_slow_for_its_feed_is_closed_with_1013() -> None:
    """The real handler and feed over a sink that never drains (a client that does not read)."""
    from types import SimpleNamespace

    from server.feed_mux import EXTRA_KEY, subscribe_me
    from tests.server.fakes import FakeSink
    from tests.server.inprocess import running_app

    bound = 65536  # the smallest --ws-queue-bytes
    async with running_app(ws_queue_bytes=bound) as srv:
        for _ in range(250):
            await srv.create("alice", "t" * 190)  # about 450 bytes a message: 110 KB in all
        sink, closer, tasks = FakeSink(auto_drain=False), _Closer(), _Tasks()
        sent: list[dict[str, Any]] = []
        session = SimpleNamespace(
            st=srv.state, sink=sink, closer=closer, tasks=tasks, user_id="alice", extras={}, send=sent.append
        )
        await subscribe_me(session, {"type": "subscribe_me", "after": 0})  # type: ignore[arg-type]
        await asyncio.gather(*tasks.running)
        assert sent == [{"type": "subscribed_me", "last_position": 250}]
        assert closer.requests and closer.requests[0][0] == 1013
        assert bound < sink.buffered < bound + 1000  # it stopped at the first message beyond the bound
        before = len(sink.writes)
        await srv.create("alice", "after the close")
        assert await srv.state.feed.reached(251, 10)
        assert len(sink.writes) == before  # nothing more for a closed feed
        assert len(sink.writes) < 250  # the rest of the catch-up was not written
        assert session.extras.get(EXTRA_KEY) is not None
