"""Kind: delivery after a decision to close (issue 10, item 5).

Once the server has decided to close a socket — flood 1008, token expiry 4401, too slow 1013,
shutdown 1001, or a refusal (1008, 4400, 4404) — nothing but the close may be written to it. Each
test holds a hand-made client that never answers the server's Close frame while events keep being
appended to the draft, reads on until the server drops the connection, and checks that no frame
came after the Close frame (and that the events before it had no gap).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

import server.ws
import server.ws_stream
from server.state import AppState
from tests.e2e.apikit import Api
from tests.server.wsclient import OP_CLOSE, OP_TEXT, Client, RawSocket, raw_connect, serving_app
from tests.serverproc import ServerProcess, make_token

SHORT_CLOSE = 0.5
"""Seconds the server waits for the peer's Close reply in these tests (5 s in production)."""


@pytest.fixture(autouse=True)
def short_close_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server.ws_stream, "CLOSE_TIMEOUT", SHORT_CLOSE)
    monkeypatch.setattr(server.ws, "CLOSE_TIMEOUT", SHORT_CLOSE)


class Appender:
    """Appends segments to a draft, one after another, until stopped (bounded)."""

    def __init__(self, c: Client, draft_id: str, size: int = 20) -> None:
        self.c = c
        self.draft_id = draft_id
        self.size = size
        self.count = 0
        self._stop = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set() and self.count < 20_000:
            try:
                await self.c.segment(self.draft_id, "alice", "x" * self.size)
            except (aiohttp.ClientError, AssertionError, RuntimeError):
                return  # the server is shutting down
            self.count += 1

    async def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, 10)


@pytest.fixture
async def app() -> AsyncIterator[tuple[Client, TestServer]]:
    settings = {"ws_flood_limit": 5, "jwt_leeway": 0.0, "max_sockets_per_user": 2, "ws_queue_size": 4}
    async with serving_app(**settings) as (srv, _), aiohttp.ClientSession() as http:
        yield Client(srv, http), srv


def assert_final(close: Any, after: list[Any], sock: RawSocket, code: int) -> None:
    assert close.close_code == code
    assert after == [], f"{len(after)} frames after the Close frame, first: {after[0].payload[:80]!r}"
    seqs = [e["seq"] for e in sock.events()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True


async def stream_until(sock: RawSocket, events: int) -> None:
    """Read until ``events`` events have arrived (the stream is live and busy)."""
    while len(sock.events()) < events:
        frame = await sock.read_frame()
        assert frame is not None and frame.opcode != OP_CLOSE, frame


@pytest.mark.parametrize("since", ["", "since=0&", "since=1&"])
@pytest.mark.parametrize("messages", [6, 30])
async def test_flood_1008_then_nothing(app: tuple[Client, TestServer], since: str, messages: int) -> None:
    c, srv = app
    d = await c.create("alice")
    for _ in range(50):
        await c.segment(d, "alice", "history")
    appender = Appender(c, d)
    sock = await raw_connect(srv, f"/v1/ws/drafts/{d}?{since}user_id=alice")
    try:
        assert (await sock.read_json())["type"] == "connected"
        await stream_until(sock, 3)
        for _ in range(messages):
            sock.send(b'{"type": "ping"}')
        close, after = await sock.until_close_then_eof()
        assert_final(close, after, sock, 1008)
        texts = [f.json() for f in sock.frames if f.opcode == OP_TEXT]
        assert texts[-1]["code"] == "rate_limited"  # the error is the last thing before the close
    finally:
        await appender.stop()
        sock.close()


@pytest.mark.parametrize("since", ["", "since=0&"])
async def test_token_expiry_4401_then_nothing(app: tuple[Client, TestServer], since: str) -> None:
    c, srv = app
    d = await c.create("alice")
    appender = Appender(c, d)
    token = make_token("alice", expires_in=1.2)
    sock = await raw_connect(srv, f"/v1/ws/drafts/{d}?{since}access_token={token}")
    try:
        assert (await sock.read_json())["type"] == "connected"
        close, after = await sock.until_close_then_eof()
        assert_final(close, after, sock, 4401)
        texts = [f.json() for f in sock.frames if f.opcode == OP_TEXT]
        assert texts[-1]["code"] == "token_expired"
        assert sock.events(), "events were flowing before the expiry"
    finally:
        await appender.stop()
        sock.close()


async def slow_closes(c: Client) -> float:
    async with c.http.get(c.server.make_url("/metrics")) as r:
        body = await r.text()
    match = re.search(r"^ringlog_ws_slow_closes_total ([0-9.e+]+)$", body, re.M)
    assert match is not None
    return float(match.group(1))


async def test_too_slow_1013_then_nothing(app: tuple[Client, TestServer]) -> None:
    c, srv = app
    d = await c.create("alice")
    sock = await raw_connect(srv, f"/v1/ws/drafts/{d}?user_id=alice", rcvbuf=4096)
    try:
        # the client does not read: append ~10 KB events until the server gives up on it
        for _ in range(3000):
            await c.segment(d, "alice", "z" * 10_000)
            if await slow_closes(c) >= 1:
                break
        assert await slow_closes(c) == 1
        for _ in range(20):  # events keep coming after the decision
            await c.segment(d, "alice", "z" * 10_000)
        close, after = await sock.until_close_then_eof(timeout=60)
        assert_final(close, after, sock, 1013)
    finally:
        sock.close()


async def test_shutdown_1001_then_nothing(app: tuple[Client, TestServer]) -> None:
    c, srv = app
    d = await c.create("alice")
    appender = Appender(c, d)
    sock = await raw_connect(srv, f"/v1/ws/drafts/{d}?since=0&user_id=alice")
    try:
        assert (await sock.read_json())["type"] == "connected"
        await stream_until(sock, 3)
        closing = asyncio.ensure_future(srv.close())
        close, after = await sock.until_close_then_eof()
        assert_final(close, after, sock, 1001)
        await asyncio.wait_for(closing, 20)
    finally:
        await appender.stop()
        sock.close()


@pytest.mark.parametrize(
    ("query", "code", "close_code"),
    [
        ("since=abc&user_id=alice", "invalid_since", 4400),
        ("since=-5&user_id=alice", "invalid_since", 4400),
        ("since=999999&user_id=alice", "invalid_since", 4400),
        ("user_id=mallory", "forbidden", 1008),
        ("", "unauthorized", 1008),
        ("access_token=x.y.z", "unauthorized", 1008),
    ],
)
async def test_refusals_then_nothing(
    app: tuple[Client, TestServer], query: str, code: str, close_code: int
) -> None:
    c, srv = app
    d = await c.create("alice")
    appender = Appender(c, d)
    sock = await raw_connect(srv, f"/v1/ws/drafts/{d}?{query}")
    try:
        close, after = await sock.until_close_then_eof()
        assert_final(close, after, sock, close_code)
        [error] = [f.json() for f in sock.frames if f.opcode == OP_TEXT]
        assert error["code"] == code
    finally:
        await appender.stop()
        sock.close()


async def test_unknown_draft_4404_and_socket_cap_1008_then_nothing(app: tuple[Client, TestServer]) -> None:
    c, srv = app
    d = await c.create("alice")
    appender = Appender(c, d)
    unknown = await raw_connect(srv, "/v1/ws/drafts/draft_unknown?user_id=alice")
    held = [await raw_connect(srv, f"/v1/ws/drafts/{d}?user_id=alice") for _ in range(2)]
    third = await raw_connect(srv, f"/v1/ws/drafts/{d}?user_id=alice")
    try:
        close, after = await unknown.until_close_then_eof()
        assert_final(close, after, unknown, 4404)
        close, after = await third.until_close_then_eof()
        assert_final(close, after, third, 1008)
        assert [f.json()["code"] for f in third.frames if f.opcode == OP_TEXT] == ["too_many_sockets"]
        registry = c.server.app[AppState.KEY].sockets
        assert registry.count("alice") == 2
    finally:
        await appender.stop()
        for sock in (unknown, third, *held):
            sock.close()


async def test_a_real_server_sends_nothing_after_its_close_frame(tmp_path: Path) -> None:
    """The same check end to end: ``ringlog serve``, appends over HTTP, flood 1008 (5 s close timeout)."""
    args = ("--dev-auth", "--rate-limit", "0", "--ws-flood-limit", "5")
    with ServerProcess(str(tmp_path / "final.db"), *args, log_path=tmp_path / "server.log") as proc:
        async with aiohttp.ClientSession() as http:
            api = Api(proc, http)
            d = (await api.create("alice"))["id"]
            stop = asyncio.Event()

            async def keep_appending() -> None:
                for i in range(20_000):
                    if stop.is_set():
                        return
                    status, _, _ = await api.segment(d, "alice", f"e2e {i}")
                    assert status == 201

            appending = asyncio.ensure_future(keep_appending())
            sock = await raw_connect(proc, f"/v1/ws/drafts/{d}?since=0", headers={"X-User-Id": "alice"})
            try:
                assert (await sock.read_json())["type"] == "connected"
                await stream_until(sock, 5)
                for _ in range(10):
                    sock.send(b'{"type": "ping"}')
                close, after = await sock.until_close_then_eof(timeout=30)
                assert_final(close, after, sock, 1008)
            finally:
                stop.set()
                await asyncio.wait_for(appending, 30)
                sock.close()


@pytest.mark.parametrize(
    ("payload", "close_code"),
    [
        (b"\xff\xfe not utf-8", 1007),  # RFC 6455 §8.1: invalid UTF-8 in a text frame
        (b'{"type": "ping"' + b" " * 5000 + b"}", 1009),  # over the 4 KiB message limit
    ],
)
async def test_protocol_errors_close_then_nothing(
    app: tuple[Client, TestServer], payload: bytes, close_code: int
) -> None:
    c, srv = app
    d = await c.create("alice")
    appender = Appender(c, d)
    sock = await raw_connect(srv, f"/v1/ws/drafts/{d}?since=0&user_id=alice")
    try:
        assert (await sock.read_json())["type"] == "connected"
        await stream_until(sock, 3)
        sock.send(payload)
        close, after = await sock.until_close_then_eof()
        assert_final(close, after, sock, close_code)
    finally:
        await appender.stop()
        sock.close()
