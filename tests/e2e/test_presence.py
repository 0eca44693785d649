"""Presence end to end (API.md v2 "Presence"): a real ``ringlog serve``, the Python client's
``DraftStream`` on one side, a plain WebSocket and ``GET …/presence`` on the other."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from ringlog import DraftStream
from tests.e2e.test_workers import WORKER_HEADER, Setup, setup  # noqa: F401 (the fixture)
from tests.serverproc import ServerProcess

WAIT = 15.0
WS_WAIT = 30.0


async def test_presence_through_a_real_server_and_the_python_client(server: ServerProcess) -> None:
    alice = {"X-User-Id": "alice"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.post(f"{server.url}/v1/collab/drafts", json={"title": "P"}, headers=alice) as r:
            draft = (await r.json())["data"]["id"]
        async with http.post(
            f"{server.url}/v1/collab/drafts/{draft}/collaborators",
            json={"user_id": "bob", "role": "viewer"},
            headers=alice,
        ) as r:
            assert r.status == 201
        seen: list[dict[str, Any]] = []
        changed = asyncio.Event()

        def on_presence(message: dict[str, Any]) -> None:
            seen.append(message)
            changed.set()

        async def until(check: Any) -> None:
            async with asyncio.timeout(WAIT):
                while not check():
                    changed.clear()
                    await changed.wait()

        async with (
            DraftStream(server.url, draft, user_id="bob", since=0, on_presence=on_presence) as bob,
            http.ws_connect(f"{server.ws_url}/v1/ws/drafts/{draft}?user_id=alice") as ws,
        ):
            assert (await ws.receive_json(timeout=WAIT))["type"] == "connected"
            sync = await ws.receive_json(timeout=WAIT)
            assert sync["type"] == "presence_sync" and "alice" in {m["user_id"] for m in sync["members"]}
            await until(lambda: "alice" in bob.presence)
            assert seen[0]["type"] == "presence_sync"
            # bob's events still arrive, in order, beside presence
            assert [(await bob.__anext__()).seq for _ in range(2)] == [1, 2]
            await bob.set_presence({"typing": True})
            for _ in range(20):
                got = await ws.receive_json(timeout=WAIT)
                if got["type"] == "presence" and got["user_id"] == "bob" and got["event"] == "update":
                    break
            assert got["state"] == {"typing": True} and "seq" not in got
            async with http.get(f"{server.url}/v1/collab/drafts/{draft}/presence", headers=alice) as r:
                assert r.status == 200
                members = {m["user_id"]: m["state"] for m in (await r.json())["data"]}
            assert members == {"alice": {}, "bob": {"typing": True}}
            async with http.get(
                f"{server.url}/v1/collab/drafts/{draft}/presence", headers={"X-User-Id": "mallory"}
            ) as r:
                assert r.status == 403
            await ws.send_json({"type": "presence", "state": {"x": "y" * 600}})
            for _ in range(20):
                got = await ws.receive_json(timeout=WAIT)
                if got["type"] == "error":
                    break
            assert got["code"] == "payload_too_large" and not ws.closed
            await ws.close()
            await until(lambda: "alice" not in bob.presence)
            assert seen[-1]["event"] == "leave" and seen[-1]["user_id"] == "alice"
        async with http.get(f"{server.url}/v1/collab/drafts/{draft}/events?since=0", headers=alice) as r:
            assert [e["seq"] for e in (await r.json())["data"]] == [1, 2]  # presence is never in the log


async def test_presence_is_shared_by_every_process_of_a_store(setup: Setup) -> None:  # noqa: F811
    """``--workers 2`` and two servers on one SQLite file, and workers on PostgreSQL: a user on
    one process is seen on the other (the peer bus, server/presence_peers.py), and leaves."""
    draft_id = await setup.create()
    status, body = await setup.request(
        "POST", f"/v1/collab/drafts/{draft_id}/collaborators", body={"user_id": "bob", "role": "viewer"}
    )
    assert status == 201, body

    def process_of(ws: aiohttp.ClientWebSocketResponse) -> str:
        return ws._response.headers.get(WORKER_HEADER) or str(ws._response.url.port)

    def ws_url(user: str) -> str:
        return setup.url().replace("http://", "ws://") + f"/v1/ws/drafts/{draft_id}?user_id={user}"

    alice = await setup.http.ws_connect(ws_url("alice"))
    spare: list[aiohttp.ClientWebSocketResponse] = []
    try:
        assert (await alice.receive_json(timeout=WS_WAIT))["type"] == "connected"
        assert (await alice.receive_json(timeout=WS_WAIT))["type"] == "presence_sync"
        bob = None
        for _ in range(40):  # the kernel spreads connections: until bob sits on another process
            candidate = await setup.http.ws_connect(ws_url("bob"))
            if process_of(candidate) != process_of(alice):
                bob = candidate
                break
            spare.append(candidate)
        assert bob is not None, "every connection landed on one process"
        for ws in spare:  # bob's sockets on alice's process leave; only the remote one stays
            await ws.close()
        assert (await bob.receive_json(timeout=WS_WAIT))["type"] == "connected"
        sync = await bob.receive_json(timeout=WS_WAIT)
        assert sync["type"] == "presence_sync"
        # alice (on the other process) is in bob's sync or joins within the bus's round trip
        members = {m["user_id"] for m in sync["members"]}
        for _ in range(50):
            if "alice" in members:
                break
            got = await bob.receive_json(timeout=WS_WAIT)
            if got["type"] == "presence" and got["event"] == "join":
                members.add(got["user_id"])
        assert "alice" in members
        await bob.send_json({"type": "presence", "state": {"from": "elsewhere"}})
        for _ in range(50):
            got = await alice.receive_json(timeout=WS_WAIT)
            if (
                got["type"] == "presence"
                and got["user_id"] == "bob"
                and got["state"] == {"from": "elsewhere"}
            ):
                break
        else:
            raise AssertionError("bob's state did not reach alice's process")
        await bob.close()
        for _ in range(50):
            got = await alice.receive_json(timeout=WS_WAIT)
            if got["type"] == "presence" and got["user_id"] == "bob" and got["event"] == "leave":
                break
        else:
            raise AssertionError("bob's leave did not reach alice's process")
    finally:
        await alice.close()
        for ws in spare:
            await ws.close()
