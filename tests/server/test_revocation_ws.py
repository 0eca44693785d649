"""Revocation over real sockets of the in-process app (API.md v2 "Revocation is live"): the
removed user's sockets get the removal event, then ``access_revoked``, then 4403 within 1 s of
the commit; the others (and a demoted user's) stay open; a long-poll returns at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.server.wsclient import Client, serving_app

REVOCATION_BOUND = 1.0
"""Seconds from the commit (the DELETE's response) to the close: API.md's bound."""


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with (
        serving_app() as (server, _),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http,
    ):
        yield Client(server, http)


async def call(c: Client, method: str, path: str, user: str, body: Any = None) -> tuple[int, Any]:
    async with c.http.request(method, c.server.make_url(path), json=body, headers={"X-User-Id": user}) as r:
        return r.status, await r.json()


async def team(c: Client) -> str:
    d = await c.create("alice")
    for user, role in (("bob", "contributor"), ("vera", "viewer")):
        await c.post(f"/v1/collab/drafts/{d}/collaborators", "alice", {"user_id": user, "role": role})
    await c.post(f"/v1/collab/drafts/{d}/ring/pass", "alice", {"to_user_id": "bob"})
    return d


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> Any:
    """The next message that is not presence (API.md v2)."""
    for _ in range(1000):
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        parsed = msg.json()
        if parsed.get("type") not in ("presence", "presence_sync"):
            return parsed
    raise AssertionError("only presence messages")


async def test_removed_users_sockets_close_4403_after_the_removal_event(client: Client) -> None:
    d = await team(client)
    async with (
        client.ws(d, "user_id=bob") as bob1,
        client.ws(d, "user_id=bob") as bob2,
        client.ws(d, "user_id=vera") as vera,
        client.ws(d, "user_id=alice") as alice,
    ):
        for ws in (bob1, bob2, vera, alice):
            assert (await next_json(ws))["type"] == "connected"
        status, _ = await call(client, "DELETE", f"/v1/collab/drafts/{d}/collaborators/bob", "alice")
        committed = time.monotonic()
        assert status == 200
        for ws in (bob1, bob2):
            removal = await next_json(ws)
            assert (removal["type"], removal["data"]["collaborator_id"]) == (
                "collab.collaborator_removed",
                "bob",
            )
            error = await next_json(ws)
            assert error == {
                "type": "error",
                "code": "access_revoked",
                "draft_id": d,
                "message": error["message"],
            }
            close = await ws.receive(timeout=5)
            assert close.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == 4403
            assert time.monotonic() - committed < REVOCATION_BOUND
        for ws in (vera, alice):  # others get both events and stay open
            assert [(await next_json(ws))["type"] for _ in range(2)] == [
                "collab.collaborator_removed",
                "collab.ring_passed",
            ]
            await ws.send_json({"type": "ping"})
            assert (await next_json(ws))["type"] == "pong"
        status, body = await call(client, "GET", f"/v1/collab/drafts/{d}", "bob")
        assert (status, body["error"]["code"]) == (403, "forbidden")


async def test_a_demoted_users_socket_stays_open(client: Client) -> None:
    d = await team(client)
    async with client.ws(d, "user_id=bob") as bob:
        assert (await next_json(bob))["type"] == "connected"
        status, _ = await call(
            client, "PATCH", f"/v1/collab/drafts/{d}/collaborators/bob", "alice", {"role": "viewer"}
        )
        assert status == 200
        assert [(await next_json(bob))["type"] for _ in range(2)] == [
            "collab.role_changed",
            "collab.ring_passed",
        ]
        await client.segment(d, "alice", "still streaming")
        assert (await next_json(bob))["type"] == "collab.segment_added"
        assert not bob.closed


async def test_a_removed_users_long_poll_returns_at_once_with_the_removal(client: Client) -> None:
    d = await team(client)
    status, body = await call(client, "GET", f"/v1/collab/drafts/{d}/events?since=0", "vera")
    head = body["head_seq"]

    async def poll() -> tuple[int, Any, float]:
        status, body = await call(client, "GET", f"/v1/collab/drafts/{d}/events?since={head}&wait=30", "vera")
        return status, body, time.monotonic()

    polling = asyncio.create_task(poll())
    await asyncio.sleep(0.2)  # the poll is parked (nothing to await from outside the server)
    assert not polling.done()
    status, _ = await call(client, "DELETE", f"/v1/collab/drafts/{d}/collaborators/vera", "vera")
    committed = time.monotonic()
    status, body, answered = await asyncio.wait_for(polling, 5)
    assert status == 200 and answered - committed < REVOCATION_BOUND
    assert [e["type"] for e in body["data"]] == ["collab.collaborator_removed"]
    status, body = await call(client, "GET", f"/v1/collab/drafts/{d}/events?since={head}&wait=1", "vera")
    assert (status, body["error"]["code"]) == (403, "forbidden")
