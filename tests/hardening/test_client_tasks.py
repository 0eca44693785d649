"""Kind: every task has an owner (issue "Hardening", item 10) — here, the Python client's.

A fake server (aiohttp's test server, in process) sends ``DraftStream`` frames that are not what
API.md promises. The consumer either goes on receiving every event once, in order (the bad frame
skipped with a warning and the gap fetched from ``/events``), or gets an exception from its
``async for`` — within a bounded time, never a silent wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ringlog import ApiError, DraftStream, Event, RinglogClient, StreamError
from ringlog.backoff import Backoff

DRAFT = "draft_fake"
WAIT = 10  # seconds a consumer may wait for what it is owed; far more than any step needs


def envelope(seq: int, draft_id: str = DRAFT, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    if seq == 1:
        data: dict[str, Any] = {"title": "Fake", "description": "", "creator_id": "alice"}
        kind = "collab.draft_created"
    else:
        segment = {"id": seq, "author_user_id": "alice", "content": f"s{seq}", "position": seq - 1,
                   "created_at": "2025-01-01T00:00:00.000Z"}  # fmt: skip
        data, kind = {"segment": segment}, "collab.segment_added"
    event = {"type": kind, "draft_id": draft_id, "seq": seq, "ts": "2025-01-01T00:00:00.000Z",
             "user_id": "alice", "data": data}  # fmt: skip
    return {**event, **(changes or {})}


Send = Callable[[web.WebSocketResponse], Awaitable[None]]


def text(value: str) -> Send:
    async def send(ws: web.WebSocketResponse) -> None:
        await ws.send_str(value)

    return send


def json_frame(value: Any) -> Send:
    return text(orjson.dumps(value).decode())


def binary(value: bytes) -> Send:
    async def send(ws: web.WebSocketResponse) -> None:
        await ws.send_bytes(value)

    return send


class FakeServer:
    """Serves one draft: the socket sends ``connected``, event 1, then ``frames``; ``/events`` the log."""

    def __init__(
        self, frames: list[Send], log: list[dict[str, Any]], events_body: bytes | None = None
    ) -> None:
        self.frames = frames
        self.log = log
        self.events_body = events_body
        self.events_calls = 0
        self.sockets = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/ws/drafts/{id}", self.ws)
        app.router.add_get("/v1/collab/drafts/{id}/events", self.events)
        return app

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        self.sockets += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        since = int(request.query.get("since", "0"))
        await ws.send_str(orjson.dumps({"type": "connected", "draft_id": DRAFT, "user_id": "alice",
                                        "ts": "t", "head_seq": len(self.log)}).decode())  # fmt: skip
        if since == 0:
            await ws.send_str(orjson.dumps(self.log[0]).decode())
        if self.sockets == 1:
            for send in self.frames:
                await send(ws)
        async for _msg in ws:  # stay open, read-only, until the client goes
            pass
        return ws

    async def events(self, request: web.Request) -> web.Response:
        self.events_calls += 1
        if self.events_body is not None:
            return web.Response(body=self.events_body, content_type="application/json")
        since = int(request.query["since"])
        body = {"data": [e for e in self.log if e["seq"] > since], "head_seq": len(self.log)}
        return web.json_response(body)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[FakeServer], Awaitable[str]]]:
    servers: list[TestServer] = []

    async def start(fake: FakeServer) -> str:
        server = TestServer(fake.app(), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


def _stream(url: str) -> DraftStream:
    return DraftStream(url, DRAFT, user_id="alice", backoff=Backoff(base=0.05, cap=0.2), poll_retry=0.05,
                       long_poll_wait=1)  # fmt: skip


async def _take(stream: DraftStream, n: int) -> list[Event]:
    it = aiter(stream)
    return [await asyncio.wait_for(anext(it), WAIT) for _ in range(n)]


BAD_FRAMES: dict[str, Send] = {
    "not json": text("this is not JSON"),
    "truncated json": text('{"type": "collab.segment_added", "seq": 2'),
    "json array": json_frame([1, 2, 3]),
    "json number": json_frame(2),
    "json string": json_frame("collab.segment_added"),
    "json null": text("null"),
    "no type": json_frame({"seq": 2}),
    "type not a string": json_frame({"type": 7, "seq": 2}),
    "event without seq": json_frame({k: v for k, v in envelope(2).items() if k != "seq"}),
    "seq a string": json_frame(envelope(2, changes={"seq": "2"})),
    "seq a float": json_frame(envelope(2, changes={"seq": 2.0})),
    "seq a bool": json_frame(envelope(2, changes={"seq": True})),
    "seq negative": json_frame(envelope(2, changes={"seq": -5})),
    "seq huge": json_frame(envelope(2, changes={"seq": 2**63})),
    "data not an object": json_frame(envelope(2, changes={"data": [1]})),
    "ts missing": json_frame({k: v for k, v in envelope(2).items() if k != "ts"}),
    "another draft": json_frame(envelope(2, draft_id="draft_other")),
    "binary frame": binary(orjson.dumps(envelope(2))),
    "binary garbage": binary(b"\xff\xfe\x00"),
    "empty text": text(""),
}


@pytest.mark.parametrize("name", sorted(BAD_FRAMES))
async def test_a_bad_frame_is_skipped_and_the_gap_fetched(
    name: str, serve: Callable[[FakeServer], Awaitable[str]], caplog: pytest.LogCaptureFixture
) -> None:
    # event 2 exists in the log; the socket sends a bad frame in its place, then nothing more
    fake = FakeServer([BAD_FRAMES[name]], [envelope(1), envelope(2)])
    url = await serve(fake)
    with caplog.at_level(logging.WARNING, logger="ringlog.stream"):
        async with _stream(url) as stream:
            got = await _take(stream, 2)
    assert [e.seq for e in got] == [1, 2]
    assert got[1].data["segment"]["content"] == "s2"
    assert any("bad frame" in r.getMessage() for r in caplog.records)
    assert fake.events_calls >= 1


async def test_bad_frames_between_good_ones_lose_and_repeat_nothing(
    serve: Callable[[FakeServer], Awaitable[str]],
) -> None:
    log = [envelope(seq) for seq in range(1, 8)]
    frames = [json_frame(log[1]), text("garbage"), json_frame(log[3]), binary(b"x"), json_frame(log[4]),
              json_frame(envelope(6, changes={"seq": "6"})), json_frame(log[6]), json_frame(log[2])]  # fmt: skip
    url = await serve(FakeServer(frames, log))
    async with _stream(url) as stream:
        got = await _take(stream, 7)
    assert [e.seq for e in got] == list(range(1, 8))


@pytest.mark.parametrize(
    "body",
    [
        b"<html>proxy error</html>",
        b"[]",
        b"{}",
        b'{"data": "nope", "head_seq": 1}',
        b'{"data": [], "head_seq": "1"}',
        b'{"data": [{"type": "collab.segment_added"}], "head_seq": 2}',
        b'{"data": [1], "head_seq": 2}',
    ],
)
async def test_an_events_reply_that_is_not_the_contract_s_ends_the_iteration_with_an_error(
    body: bytes, serve: Callable[[FakeServer], Awaitable[str]]
) -> None:
    fake = FakeServer([text("not json")], [envelope(1), envelope(2)], events_body=body)
    url = await serve(fake)
    async with _stream(url) as stream:
        assert [e.seq for e in await _take(stream, 1)] == [1]
        with pytest.raises(StreamError) as err:
            await _take(stream, 1)
        assert err.value.code == "bad_response"
        with pytest.raises(StreamError):  # and it stays ended, rather than hanging
            await _take(stream, 1)


async def test_an_unexpected_failure_of_the_task_reaches_the_consumer(
    serve: Callable[[FakeServer], Awaitable[str]],
) -> None:
    class Failing(DraftStream):
        """The owner under test is ``_run``; the failure comes from a step it calls."""

        async def _deliver(self, events: list[Event]) -> None:
            raise RuntimeError("a bug in delivery")

    url = await serve(FakeServer([], [envelope(1)]))
    async with Failing(url, DRAFT, user_id="alice") as stream:
        with pytest.raises(StreamError) as err:
            await _take(stream, 1)
    assert err.value.code == "internal_error" and "a bug in delivery" in err.value.message


async def test_status_callbacks_say_what_happens_and_a_failing_callback_changes_nothing(
    serve: Callable[[FakeServer], Awaitable[str]],
) -> None:
    seen: list[tuple[str, str]] = []

    def on_status(status: str, detail: str) -> None:
        seen.append((status, detail))
        raise ValueError("the caller's own bug")

    url = await serve(FakeServer([], [envelope(1)]))
    async with DraftStream(url, DRAFT, user_id="alice", on_status=on_status) as stream:
        assert [e.seq for e in await _take(stream, 1)] == [1]
        await stream.wait_for_status("live", timeout=WAIT)
    assert seen[0] == ("offline", f"connecting to {url}")
    assert ("live", "") in seen


@pytest.mark.parametrize(
    "url",
    ["127.0.0.1:8000", "ws://127.0.0.1:8000", "http://", "localhost", "", "http://a b", "http://x:99999"],
)
def test_clients_refuse_a_base_url_they_cannot_use(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        DraftStream(url, DRAFT, user_id="alice")
    with pytest.raises(ValueError, match="URL"):
        RinglogClient(url, user_id="alice")


@pytest.mark.parametrize("since", [-1, True, 1.5, "3"])
def test_a_stream_refuses_a_since_it_cannot_use(since: Any) -> None:
    with pytest.raises(ValueError, match="since"):
        DraftStream("http://127.0.0.1:1", DRAFT, user_id="alice", since=since)


async def test_a_cancelled_task_still_wakes_the_consumer(
    serve: Callable[[FakeServer], Awaitable[str]],
) -> None:
    url = await serve(FakeServer([], [envelope(1)]))
    async with _stream(url) as stream:
        assert [e.seq for e in await _take(stream, 1)] == [1]
        waiting = asyncio.ensure_future(_take(stream, 1))
        task = stream._task
        assert task is not None
        task.cancel()  # what an event loop shutting down, or a careless caller, does
        with pytest.raises(StreamError) as err:
            await asyncio.wait_for(waiting, WAIT)
        assert err.value.code == "internal_error"


def _not_ringlog(body: bytes | None) -> web.Application:
    async def answer(request: web.Request) -> web.StreamResponse:
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


@pytest.mark.parametrize("body", [None, b"<html>a different web server</html>"])
async def test_a_server_that_is_not_ringlog_ends_the_stream(body: bytes | None) -> None:
    """``tail --url`` pointing at some other web server: an error from the loop, not a wait."""
    server = TestServer(_not_ringlog(body), host="127.0.0.1")
    await server.start_server()
    try:
        async with _stream(str(server.make_url("")).rstrip("/")) as stream:
            with pytest.raises(StreamError) as err:
                await _take(stream, 1)
        assert err.value.code in ("http_error", "bad_response")
    finally:
        await server.close()


@pytest.mark.parametrize("body", [b"<html>not json</html>", b"[]", b'{"nodata": 1}', b"null"])
async def test_rest_replies_that_are_not_the_contract_s_are_api_errors(body: bytes) -> None:
    server = TestServer(_not_ringlog(body), host="127.0.0.1")
    await server.start_server()
    try:
        async with RinglogClient(str(server.make_url("")), user_id="alice") as api:
            with pytest.raises(ApiError) as err:
                await api.get_draft("draft_x")
        assert err.value.code == "bad_response"
    finally:
        await server.close()
