"""SIGTERM and restart of a real ``ringlog serve``: state, stream and idempotent retries are identical."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.apikit import TIMEOUT, Api, assert_error, bearer, receive_close, receive_json
from tests.serverproc import ServerProcess


async def stream_from_zero(srv: ServerProcess, http: aiohttp.ClientSession, d: str, head: int) -> list[Any]:
    async with http.ws_connect(f"{srv.ws_url}/v1/ws/drafts/{d}?since=0", headers=bearer("alice")) as ws:
        connected = await receive_json(ws)
        assert connected["head_seq"] == head
        return [await receive_json(ws) for _ in range(head)]


async def snapshot(api: Api, d: str) -> dict[str, Any]:
    status, state, headers = await api.call("GET", f"/v1/collab/drafts/{d}", "alice")
    assert status == 200
    _, listing, _ = await api.call("GET", "/v1/collab/drafts", "bob")
    return {
        "state": state,
        "etag": headers["ETag"],
        "events": await api.events(d, "alice", limit=3),
        "stream": await stream_from_zero(api.server, api.http, d, state["data"]["seq"]),
        "listing": listing,
    }


async def test_state_stream_and_idempotent_retries_survive_sigterm_and_restart(tmp_path: Path) -> None:
    srv = ServerProcess(str(tmp_path / "restart.db"), "--rate-limit", "0", log_path=tmp_path / "server.log")
    retries: list[tuple[str, str, dict[str, Any], str]] = [
        ("POST", "/v1/collab/drafts", {"title": "kept", "description": "across restarts"}, "create-1"),
    ]
    with srv:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            api = Api(srv, http)
            status, created, _ = await api.call(
                "POST", "/v1/collab/drafts", "alice", retries[0][2], {"Idempotency-Key": "create-1"}
            )
            assert status == 201
            d = created["data"]["id"]
            retries += [
                ("POST", f"/v1/collab/drafts/{d}/collaborators", {"user_id": "bob", "role": "contributor"}, "add-bob"),
                ("POST", f"/v1/collab/drafts/{d}/segments", {"content": "first words"}, "seg-1"),
                ("PATCH", f"/v1/collab/drafts/{d}", {"title": "kept (renamed)"}, "rename"),
                ("POST", f"/v1/collab/drafts/{d}/ring/pass", {"to_user_id": "bob"}, "pass-1"),
            ]  # fmt: skip
            first: list[tuple[int, Any]] = [(status, created)]
            for method, path, payload, key in retries[1:]:
                status, body, _ = await api.call(method, path, "alice", payload, {"Idempotency-Key": key})
                assert status in (200, 201), body
                first.append((status, body))
            for i in range(5):
                status, _, _ = await api.segment(d, "bob", f"bob {i}")
                assert status == 201
            before = await snapshot(api, d)
            assert before["state"]["data"]["seq"] == 10
            # a live socket is told the server is going away
            ws = await http.ws_connect(f"{srv.ws_url}/v1/ws/drafts/{d}", headers=bearer("bob"))
            assert (await receive_json(ws))["type"] == "connected"
            exit_status = asyncio.ensure_future(asyncio.to_thread(srv.stop))
            assert await receive_close(ws) == 1001
            assert await asyncio.wait_for(exit_status, 30) == 0

    with srv:  # the same port and database
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            api = Api(srv, http)
            after = await snapshot(api, d)
            assert after == before
            for (method, path, payload, key), (status, body) in zip(retries, first, strict=True):
                again = await api.call(method, path, "alice", payload, {"Idempotency-Key": key})
                assert (again[0], again[1]) == (status, body), key
                assert again[2].get("Idempotent-Replayed") == "true"
            status, err, _ = await api.call(
                "POST", f"/v1/collab/drafts/{d}/segments", "alice", {"content": "other body"},
                {"Idempotency-Key": "seg-1"},
            )  # fmt: skip
            assert_error(status, err, 422, "idempotency_key_reused")
            # nothing was appended by the retries, and the log goes on without a gap
            assert (await api.state(d, "alice"))["seq"] == 10
            status, body, _ = await api.segment(d, "bob", "after restart")
            assert status == 201 and body["data"]["seq"] == 11
            ids = [s["id"] for s in (await api.state(d, "alice"))["segments"]]
            assert len(ids) == len(set(ids)) == 7
            events = await api.events(d, "alice")
            assert [e["seq"] for e in events] == list(range(1, 12))
            assert events[:10] == before["events"]
        assert srv.stop() == 0
