"""The thinnest end-to-end slice: create, append, stream, over real HTTP and WebSocket."""

from __future__ import annotations

import aiohttp

from tests.serverproc import ServerProcess, make_token


async def test_create_append_and_stream(server: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {make_token('alice')}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        r = await http.post(f"{server.url}/v1/collab/drafts", json={"title": "Hello"})
        assert r.status == 201
        draft = (await r.json())["data"]
        async with http.ws_connect(f"{server.ws_url}/v1/ws/drafts/{draft['id']}?since=0") as ws:
            connected = await ws.receive_json(timeout=5)
            assert connected["type"] == "connected" and connected["head_seq"] == 1
            sync = await ws.receive_json(timeout=5)  # API.md v2 "Presence": before any event
            assert sync["type"] == "presence_sync" and [m["user_id"] for m in sync["members"]] == ["alice"]
            first = await ws.receive_json(timeout=5)
            assert first["type"] == "collab.draft_created" and first["seq"] == 1
            r = await http.post(
                f"{server.url}/v1/collab/drafts/{draft['id']}/segments", json={"content": "hi"}
            )
            assert r.status == 201
            live = await ws.receive_json(timeout=5)
            assert live["seq"] == 2 and live["data"]["segment"]["content"] == "hi"
    assert server.stop() == 0
