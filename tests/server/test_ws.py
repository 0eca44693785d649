"""The WebSocket's admission and streaming in-process: the real app on a MemoryStore, no server process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from eventstore.errors import StoreUnavailable
from eventstore.memory import MemoryStore
from server.state import AppState
from tests.server.wsclient import OP_TEXT, Client, raw_connect, serving_app
from tests.serverproc import make_token

SETTINGS = {"max_sockets_per_user": 2, "ws_flood_limit": 5, "jwt_leeway": 0.0}


@pytest.fixture
async def app() -> AsyncIterator[tuple[Client, MemoryStore]]:
    timeout = aiohttp.ClientTimeout(total=20)
    async with serving_app(**SETTINGS) as (server, store), aiohttp.ClientSession(timeout=timeout) as http:
        yield Client(server, http), store


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> Any:
    """The next message that is not presence (API.md v2: ``presence_sync`` follows ``connected``)."""
    for _ in range(1000):
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        parsed = msg.json()
        if parsed.get("type") not in ("presence", "presence_sync"):
            return parsed
    raise AssertionError("only presence messages")


async def refusal(ws: aiohttp.ClientWebSocketResponse) -> tuple[dict[str, Any], int | None]:
    error = await receive_json(ws)
    msg = await ws.receive(timeout=10)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
    return error, ws.close_code


async def test_connected_then_catch_up_then_live(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    d = await c.create("alice")
    for i in range(3):
        await c.segment(d, "alice", f"s{i}")
    async with c.ws(d, "since=1&user_id=alice") as ws:
        connected = await receive_json(ws)
        assert connected["type"] == "connected" and connected["head_seq"] == 4
        assert [(await receive_json(ws))["seq"] for _ in range(3)] == [2, 3, 4]
        await c.segment(d, "alice", "live")
        assert (await receive_json(ws))["seq"] == 5


@pytest.mark.parametrize(
    ("query", "user", "code", "close"),
    [
        ("", None, "unauthorized", 1008),
        ("user_id=", None, "unauthorized", 1008),
        ("user_id=bob", None, "forbidden", 1008),
        ("since=abc&user_id=alice", None, "invalid_since", 4400),
        ("since=-1&user_id=alice", None, "invalid_since", 4400),
        ("since=2&user_id=alice", None, "invalid_since", 4400),
        ("since=&user_id=alice", None, "invalid_since", 4400),
        ("since=1.0&user_id=alice", None, "invalid_since", 4400),
        ("since=" + "9" * 5000 + "&user_id=alice", None, "invalid_since", 4400),
        ("access_token=not.a.jwt", None, "unauthorized", 1008),
    ],
)
async def test_refusals_are_mapped_like_rest_then_one_close_table(
    app: tuple[Client, MemoryStore], query: str, user: str | None, code: str, close: int
) -> None:
    c, _ = app
    d = await c.create("alice")
    async with c.ws(d, query) as ws:
        error, close_code = await refusal(ws)
    assert error["type"] == "error" and error["code"] == code and error["message"]
    assert close_code == close


async def test_unknown_draft_is_4404(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    async with c.ws("draft_nope", "user_id=alice") as ws:
        error, close_code = await refusal(ws)
    assert (error["code"], close_code) == ("not_found", 4404)


async def test_socket_cap_is_1008_too_many_sockets(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    d = await c.create("alice")
    async with c.ws(d, "user_id=alice") as a, c.ws(d, "user_id=alice") as b:
        assert (await receive_json(a))["type"] == (await receive_json(b))["type"] == "connected"
        async with c.ws(d, "user_id=alice") as third:
            error, close_code = await refusal(third)
    assert (error["code"], close_code) == ("too_many_sockets", 1008)


async def test_store_unavailable_is_1013_with_a_retry_hint(
    app: tuple[Client, MemoryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    c, _ = app
    d = await c.create("alice")
    projector = c.server.app[AppState.KEY].projector

    async def unavailable(draft_id: str) -> None:
        raise StoreUnavailable("down")

    monkeypatch.setattr(projector, "get", unavailable)
    async with c.ws(d, "user_id=alice") as ws:
        error, close_code = await refusal(ws)
    assert (error["code"], close_code) == ("unavailable", 1013)
    assert error["retry_after"] == 1


async def test_an_unexpected_error_is_1011_internal_error(
    app: tuple[Client, MemoryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    c, _ = app
    d = await c.create("alice")
    projector = c.server.app[AppState.KEY].projector

    async def broken(draft_id: str) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(projector, "get", broken)
    async with c.ws(d, "user_id=alice") as ws:
        error, close_code = await refusal(ws)
    assert (error["code"], close_code) == ("internal_error", 1011)
    assert "bug" not in error["message"]


async def test_ping_pong_bad_messages_then_flood_1008(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    d = await c.create("alice")
    async with c.ws(d, "user_id=alice") as ws:
        await receive_json(ws)
        await ws.send_json({"type": "ping"})
        assert (await receive_json(ws))["type"] == "pong"
        await ws.send_str("nope")
        assert (await receive_json(ws))["code"] == "bad_message"
        await ws.send_bytes(b"\x00")
        assert (await receive_json(ws))["code"] == "bad_message"
        for _ in range(10):
            await ws.send_json({"type": "ping"})
        messages = []
        while (msg := await ws.receive(timeout=10)).type == aiohttp.WSMsgType.TEXT:
            messages.append(msg.json())
        assert messages[-1]["code"] == "rate_limited"
        assert ws.close_code == 1008


async def test_4401_when_the_token_expires(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    d = await c.create("alice")
    token = make_token("alice", expires_in=1.5)
    async with c.ws(d, f"access_token={token}") as ws:
        assert (await receive_json(ws))["type"] == "connected"
        error = await receive_json(ws)
        assert error == {"type": "error", "code": "token_expired", "message": error["message"]}
        assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4401


async def test_the_socket_lives_as_long_as_rest_accepts_its_token() -> None:
    """REST accepts a token until exp + leeway: so does the socket (one rule on every channel)."""
    async with serving_app(jwt_leeway=30.0) as (server, _), aiohttp.ClientSession() as http:
        c = Client(server, http)
        d = await c.create("alice")
        token = make_token("alice", expires_in=-2)  # expired, but within the leeway
        async with http.get(
            server.make_url(f"/v1/collab/drafts/{d}"), headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 200
        async with c.ws(d, f"access_token={token}") as ws:
            assert (await receive_json(ws))["type"] == "connected"
            await c.segment(d, "alice", "still streaming")
            assert (await receive_json(ws))["seq"] == 2


async def test_1001_on_shutdown() -> None:
    async with serving_app() as (server, _), aiohttp.ClientSession() as http:
        c = Client(server, http)
        d = await c.create("alice")
        sockets = [
            await http.ws_connect(server.make_url(f"/v1/ws/drafts/{d}?user_id=alice")) for _ in range(3)
        ]
        for ws in sockets:
            assert (await receive_json(ws))["type"] == "connected"
            assert (await ws.receive(timeout=10)).json()["type"] == "presence_sync"
        closing = asyncio.ensure_future(server.close())
        for ws in sockets:
            assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1001
            await ws.close()
        await asyncio.wait_for(closing, 20)


async def test_socket_tasks_do_not_pile_up(app: tuple[Client, MemoryStore]) -> None:
    c, _ = app
    d = await c.create("alice")
    registry = c.server.app[AppState.KEY].sockets
    async with c.ws(d, "since=0&user_id=alice") as ws:
        await receive_json(ws)
        assert (await receive_json(ws))["seq"] == 1
        for i in range(5):
            await c.segment(d, "alice", f"s{i}")
            assert (await receive_json(ws))["seq"] == i + 2
        assert len(registry.tasks) == 0  # the catch-up finished and was dropped; no backlog writer


async def test_a_socket_that_stops_reading_then_reads_again_gets_everything() -> None:
    """The backlog forms on the real transport and drains when it resumes writing (no 1013)."""
    settings = {"ws_queue_size": 100_000, "ws_queue_bytes": 64 << 20}
    async with serving_app(**settings) as (server, _), aiohttp.ClientSession() as http:
        c = Client(server, http)
        d = await c.create("alice")
        registry = server.app[AppState.KEY].sockets
        sock = await raw_connect(server, f"/v1/ws/drafts/{d}?since=0&user_id=alice", rcvbuf=4096)
        try:
            head = 1
            for _ in range(2000):  # until the socket's backlog writer runs: the transport paused
                head = await c.segment(d, "alice", "z" * 10_000)
                if registry.tasks:
                    break
            assert registry.tasks, "the transport never filled up"
            head = max(head, *[await c.segment(d, "alice", "after") for _ in range(5)])
            assert (await sock.read_json())["type"] == "connected"
            while len(sock.events()) < head:
                frame = await sock.read_frame()
                assert frame is not None and frame.opcode == OP_TEXT, frame
            assert [e["seq"] for e in sock.events()] == list(range(1, head + 1))
        finally:
            sock.close()
