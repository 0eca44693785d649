"""Small helpers shared by the API, WebSocket and auth end-to-end tests (real HTTP, real sockets)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import orjson

from tests.serverproc import ServerProcess, make_token

TIMEOUT = aiohttp.ClientTimeout(total=30)


def bearer(user: str, **claims: Any) -> dict[str, str]:
    """An Authorization header with a valid HS256 token for ``user``."""
    return {"Authorization": f"Bearer {make_token(user, **claims)}"}


class Api:
    """A thin JSON client for one server: every call returns (status, parsed body, headers)."""

    def __init__(self, server: ServerProcess, http: aiohttp.ClientSession) -> None:
        self.server = server
        self.http = http

    async def call(
        self,
        method: str,
        path: str,
        user: str | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[int, Any, Any]:
        h = dict(bearer(user)) if user is not None else {}
        h.update(headers or {})
        async with self.http.request(method, self.server.url + path, json=json, headers=h, **kwargs) as r:
            raw = await r.read()
            body: Any
            if r.content_type == "application/json" and raw:
                body = await r.json()
            else:
                body = raw
            return r.status, body, r.headers

    async def create(self, user: str, title: str = "T", **extra: Any) -> dict[str, Any]:
        status, body, _ = await self.call("POST", "/v1/collab/drafts", user, {"title": title, **extra})
        assert status == 201, body
        return body["data"]  # type: ignore[no-any-return]

    async def add(self, draft_id: str, by: str, user: str, role: str = "contributor") -> int:
        status, body, _ = await self.call(
            "POST", f"/v1/collab/drafts/{draft_id}/collaborators", by, {"user_id": user, "role": role}
        )
        assert status == 201, body
        return body["data"]["seq"]  # type: ignore[no-any-return]

    async def segment(self, draft_id: str, user: str, content: str = "x") -> tuple[int, Any, Any]:
        return await self.call("POST", f"/v1/collab/drafts/{draft_id}/segments", user, {"content": content})

    async def pass_ring(self, draft_id: str, user: str, to: str) -> tuple[int, Any, Any]:
        return await self.call("POST", f"/v1/collab/drafts/{draft_id}/ring/pass", user, {"to_user_id": to})

    async def state(self, draft_id: str, user: str) -> dict[str, Any]:
        status, body, _ = await self.call("GET", f"/v1/collab/drafts/{draft_id}", user)
        assert status == 200, body
        return body["data"]  # type: ignore[no-any-return]

    async def events(
        self, draft_id: str, user: str, since: int = 0, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Every event after ``since``, paging through /events."""
        out: list[dict[str, Any]] = []
        for _ in range(10_000):
            status, body, _ = await self.call(
                "GET", f"/v1/collab/drafts/{draft_id}/events?since={since}&limit={limit}", user
            )
            assert status == 200, body
            page = body["data"]
            out.extend(page)
            if not page or page[-1]["seq"] >= body["head_seq"]:
                return out
            since = page[-1]["seq"]
        raise AssertionError("paging did not end")


def assert_error(status: int, body: Any, expected_status: int, code: str) -> None:
    """The contract's error shape: no stack trace, the given status and code."""
    assert status == expected_status, (status, body)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert err["code"] == code, body
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in str(body)


async def receive_json(
    ws: aiohttp.ClientWebSocketResponse, timeout: float = 10, presence: bool = False
) -> dict[str, Any]:
    """The next text frame as JSON (fails on close or after ``timeout``); presence messages
    (API.md v2, ``presence_sync`` right after ``connected``) are skipped unless ``presence``."""
    for _ in range(1000):
        msg = await asyncio.wait_for(ws.receive(), timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
        parsed: dict[str, Any] = orjson.loads(msg.data)
        if presence or parsed.get("type") not in ("presence", "presence_sync"):
            return parsed
    raise AssertionError("only presence messages")


async def receive_close(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> int:
    """Read until the close frame; return the close code."""
    for _ in range(100_000):
        msg = await asyncio.wait_for(ws.receive(), timeout)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            code = ws.close_code
            assert code is not None
            return code
    raise AssertionError("no close frame")


def users(*names: str) -> list[str]:
    """Fresh user ids (a module's server is shared between its tests)."""
    tag = uuid.uuid4().hex[:8]
    return [f"{n}_{tag}" for n in names]
