"""Kind: values one store accepts and another refuses — draft ids in the path (issue 10, item 6).

Only ids of the form the server makes (``draft_`` + 20 lowercase hex digits) can name a draft.
Anything else is 404 ``not_found`` on every route (4404 on the WebSocket) without the store
being asked anything about it; and untrusted values are escaped in log lines.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from eventstore.events import IdempotencyClaim, NewEvent, Record
from eventstore.memory import MemoryStore
from eventstore.notifier import Listener, Notifier
from eventstore.store import AppendResult, Snapshot
from server.errors import error_middleware
from server.service import DRAFT_ID, is_draft_id, new_draft_id
from tests.server.inprocess import InProcess, running_app


class RecordingNotifier(Notifier):
    def __init__(self, seen: list[str]) -> None:
        super().__init__()
        self.seen = seen

    def add_listener(self, draft_id: str, listener: Listener) -> None:
        self.seen.append(draft_id)
        super().add_listener(draft_id, listener)


class RecordingStore(MemoryStore):
    """Remembers every draft id it was asked about (reads, heads, appends, snapshots, listeners)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []
        self.notifier = RecordingNotifier(self.seen)

    async def read(self, draft_id: str, after_seq: int = 0, limit: int | None = None) -> list[Record]:
        self.seen.append(draft_id)
        return await super().read(draft_id, after_seq, limit)

    async def read_stream_bodies(self, draft_id: str, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        self.seen.append(draft_id)
        return await super().read_stream_bodies(draft_id, after_seq, limit)

    async def head(self, draft_id: str) -> int:
        self.seen.append(draft_id)
        return await super().head(draft_id)

    async def load_snapshot(self, draft_id: str) -> Snapshot | None:
        self.seen.append(draft_id)
        return await super().load_snapshot(draft_id)

    async def append(
        self,
        draft_id: str,
        events: Sequence[NewEvent],
        expected_seq: int,
        idempotency: IdempotencyClaim | None = None,
    ) -> AppendResult:
        self.seen.append(draft_id)
        return await super().append(draft_id, events, expected_seq, idempotency)

    def malformed_seen(self) -> list[str]:
        return [d for d in self.seen if not is_draft_id(d)]


ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "", None),
    ("PATCH", "", {"title": "t"}),
    ("POST", "/segments", {"content": "c"}),
    ("POST", "/ring/pass", {"to_user_id": "bob"}),
    ("POST", "/collaborators", {"user_id": "bob", "role": "viewer"}),
    ("GET", "/events?since=0", None),
    ("GET", "/events?since=0&wait=0.2", None),
]

GOOD = "draft_" + "0" * 20
# already percent-encoded path segments
BAD_ENCODED = [
    "%00",
    "draft_%00",
    "draft_" + "0" * 19 + "%00",
    GOOD + "%00",
    "draft_" + "0" * 19,
    "draft_" + "0" * 21,
    "draft_" + "A" * 20,
    "DRAFT_" + "0" * 20,
    "draft_" + "g" * 20,
    quote("draft_" + "٣" * 20),  # Arabic-Indic digits
    quote("draft_" + "０" * 20),  # fullwidth digits
    quote("draft_" + "0" * 19 + "\u200b"),  # zero-width space
    "%ED%A0%80",  # a UTF-8-encoded lone surrogate
    "draft_%FF%FE" + "0" * 16,  # not UTF-8 at all
    GOOD + "%0A",
    "%20" + GOOD,
    GOOD + "%2F",
    "draft_%2E%2E",
    "x" * 4000,
    quote("🙂" * 10),
    "d1",
]


async def _route_answers(srv: InProcess, encoded_id: str) -> list[tuple[str, int, str | None]]:
    out = []
    for method, tail, body in ROUTES:
        status, reply, _ = await srv.call(method, f"/v1/collab/drafts/{encoded_id}{tail}", "alice", body)
        code = reply["error"]["code"] if isinstance(reply, dict) and "error" in reply else None
        out.append((f"{method} {tail}", status, code))
    return out


@pytest.mark.parametrize("encoded_id", BAD_ENCODED)
async def test_a_malformed_id_is_404_on_every_route_and_never_reaches_the_store(encoded_id: str) -> None:
    store = RecordingStore()
    async with running_app(store) as srv:
        await srv.create()  # a real draft exists, so the store is not simply empty
        store.seen.clear()
        answers = await _route_answers(srv, encoded_id)
        async with srv.client.ws_connect(f"/v1/ws/drafts/{encoded_id}?user_id=alice") as ws:
            first = await ws.receive(timeout=10)
            refusal = first.json() if first.type == WSMsgType.TEXT else None
            closed = await ws.receive(timeout=10)
    assert all((status, code) == (404, "not_found") for _, status, code in answers), answers
    assert refusal == {"type": "error", "code": "not_found", "message": "draft not found"}
    assert closed.type == WSMsgType.CLOSE and closed.data == 4404
    assert store.malformed_seen() == []


async def test_a_well_formed_unknown_id_is_404_too_and_is_looked_up() -> None:
    store = RecordingStore()
    async with running_app(store) as srv:
        answers = await _route_answers(srv, GOOD)
    assert all((status, code) == (404, "not_found") for _, status, code in answers), answers
    assert GOOD in store.seen  # a real lookup, unlike the malformed ids above


def test_the_server_makes_only_ids_it_accepts() -> None:
    for _ in range(1000):
        made = new_draft_id()
        assert is_draft_id(made) and DRAFT_ID.fullmatch(made)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=8))
def test_any_text_that_is_not_an_id_is_404_and_never_reaches_the_store(ids: list[str]) -> None:
    for raw in ids:
        assume(not is_draft_id(raw))
        assume(raw not in (".", ".."))  # dot-segments: the client's URL normalisation removes them
    asyncio.run(_check_texts(ids))


async def _check_texts(ids: list[str]) -> None:
    store = RecordingStore()
    async with running_app(store) as srv:
        for raw in ids:
            encoded = quote(raw.encode("utf-8", "surrogatepass"), safe="")
            for method, tail, body in (ROUTES[0], ROUTES[2], ROUTES[5]):
                status, reply, _ = await srv.call(method, f"/v1/collab/drafts/{encoded}{tail}", "alice", body)
                assert (status, reply["error"]["code"]) == (404, "not_found"), (raw, method, tail, reply)
    assert store.malformed_seen() == []


async def test_log_lines_escape_untrusted_path_values(caplog: pytest.LogCaptureFixture) -> None:
    """A path with control characters cannot forge or colour a log line."""

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("unexpected")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/boom/{anything}", boom)
    caplog.set_level(logging.ERROR, logger="server.errors")
    async with TestClient(TestServer(app)) as client:
        for evil in ("%1B%5B31mred", "a%00b", "line%0Aforged%20entry", "%0D%0Aset-cookie"):
            async with client.get(f"/boom/{evil}") as r:
                assert r.status == 500
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4
    for message in messages:
        assert not any(ch in message for ch in "\x1b\x00\n\r"), message
