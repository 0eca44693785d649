"""Presence end to end (API.md v2 "Presence"): a real ``ringlog serve``, the Python client's
``DraftStream`` on one side, a plain WebSocket and ``GET …/presence`` on the other."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from ringlog import DraftStream
from tests.serverproc import ServerProcess

WAIT = 15.0


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
