"""The WebSocket rows of API.md against a real ``ringlog serve``: every close code and message."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.apikit import TIMEOUT, Api, bearer, receive_close, receive_json
from tests.serverproc import ServerProcess, make_token

TS_LEN = len("2025-12-23T20:30:45.123Z")


SERVER_ARGS = (
    "--dev-auth", "--rate-limit", "0", "--max-sockets-per-user", "2", "--ws-flood-limit", "5",
    "--jwt-leeway", "0",
)  # fmt: skip


def user() -> str:
    return "u_" + uuid.uuid4().hex[:10]


def ws_path(api: Api, draft_id: str, query: str = "") -> str:
    return f"{api.server.ws_url}/v1/ws/drafts/{draft_id}" + (f"?{query}" if query else "")


async def test_connected_first_then_replay_then_live(api: Api) -> None:
    alice = user()
    d = (await api.create(alice))["id"]
    for i in range(3):
        await api.segment(d, alice, f"s{i}")
    async with api.http.ws_connect(ws_path(api, d, "since=1"), headers=bearer(alice)) as ws:
        connected = await receive_json(ws)
        assert set(connected) == {"type", "draft_id", "user_id", "ts", "head_seq"}
        assert connected["type"] == "connected" and connected["draft_id"] == d
        assert connected["user_id"] == alice and connected["head_seq"] == 4
        assert connected["ts"].endswith("Z") and len(connected["ts"]) == TS_LEN
        assert [(await receive_json(ws))["seq"] for _ in range(3)] == [2, 3, 4]
        status, _, _ = await api.segment(d, alice, "live")
        assert status == 201
        live = await receive_json(ws)
        assert live["seq"] == 5 and live["type"] == "collab.segment_added"
        assert set(live) == {"type", "draft_id", "seq", "ts", "user_id", "data"}
    async with api.http.ws_connect(ws_path(api, d, "since=0"), headers=bearer(alice)) as ws:
        await receive_json(ws)
        replay = [await receive_json(ws) for _ in range(5)]
        assert [e["seq"] for e in replay] == [1, 2, 3, 4, 5]
        assert replay[0]["type"] == "collab.draft_created"
        assert replay == await api.events(d, alice)


async def test_without_since_the_stream_starts_after_head(api: Api) -> None:
    alice = user()
    d = (await api.create(alice))["id"]
    await api.segment(d, alice, "old")
    async with api.http.ws_connect(ws_path(api, d), headers=bearer(alice)) as ws:
        connected = await receive_json(ws)
        assert connected["head_seq"] == 2
        await api.segment(d, alice, "new")
        event = await receive_json(ws)
        assert event["seq"] == 3 and event["data"]["segment"]["content"] == "new"
    # since equal to the head is allowed too
    async with api.http.ws_connect(ws_path(api, d, "since=3"), headers=bearer(alice)) as ws:
        assert (await receive_json(ws))["head_seq"] == 3
        await api.segment(d, alice, "newer")
        assert (await receive_json(ws))["seq"] == 4


@pytest.mark.parametrize("query", ["since=abc", "since=-1", "since=3", "since=1.0", "since=", "since=99999"])
async def test_4400_invalid_since(api: Api, query: str) -> None:
    alice = user()
    d = (await api.create(alice))["id"]
    await api.segment(d, alice)
    async with api.http.ws_connect(ws_path(api, d, query), headers=bearer(alice)) as ws:
        error = await receive_json(ws)
        assert error["type"] == "error" and error["code"] == "invalid_since" and error["message"]
        assert await receive_close(ws) == 4400


async def test_4404_unknown_draft(api: Api) -> None:
    async with api.http.ws_connect(ws_path(api, "draft_nope", "since=0"), headers=bearer(user())) as ws:
        error = await receive_json(ws)
        assert error["type"] == "error" and error["code"] == "not_found"
        assert await receive_close(ws) == 4404


async def test_1008_unauthorized_and_forbidden(api: Api) -> None:
    alice = user()
    d = (await api.create(alice))["id"]
    for headers, query in (
        ({}, ""),
        ({"Authorization": "Bearer garbage"}, ""),
        ({}, "access_token=garbage"),
        ({}, f"access_token={make_token(alice, expires_in=-5)}"),
        ({}, "user_id=has%20space"),
    ):
        async with api.http.ws_connect(ws_path(api, d, query), headers=headers) as ws:
            error = await receive_json(ws)
            assert error["type"] == "error" and error["code"] == "unauthorized", (headers, query)
            assert await receive_close(ws) == 1008
    async with api.http.ws_connect(ws_path(api, d), headers=bearer(user())) as ws:
        error = await receive_json(ws)
        assert error["type"] == "error" and error["code"] == "forbidden"
        assert await receive_close(ws) == 1008


async def test_every_way_to_authenticate_a_socket(api: Api) -> None:
    alice = user()
    d = (await api.create(alice))["id"]
    ways: list[tuple[dict[str, str], str]] = [
        (bearer(alice), ""),
        ({}, f"access_token={make_token(alice)}"),
        ({"X-User-Id": alice}, ""),
        ({}, f"user_id={alice}"),
    ]
    for headers, query in ways:
        async with api.http.ws_connect(ws_path(api, d, query), headers=headers) as ws:
            connected = await receive_json(ws)
            assert connected["type"] == "connected" and connected["user_id"] == alice, query


async def test_1008_too_many_sockets(api: Api) -> None:
    alice = user()
    d = (await api.create(alice))["id"]
    async with (
        api.http.ws_connect(ws_path(api, d), headers=bearer(alice)) as ws1,
        api.http.ws_connect(ws_path(api, d), headers=bearer(alice)) as ws2,
    ):
        assert (await receive_json(ws1))["type"] == "connected"
        assert (await receive_json(ws2))["type"] == "connected"
        async with api.http.ws_connect(ws_path(api, d), headers=bearer(alice)) as ws3:
            error = await receive_json(ws3)
            assert error["type"] == "error" and error["code"] == "too_many_sockets"
            assert await receive_close(ws3) == 1008
        # another user is not affected
        async with api.http.ws_connect(ws_path(api, d), headers={"X-User-Id": alice + "_other"}) as other:
            assert (await receive_json(other))["code"] == "forbidden"
        await ws1.close()
    # both closed: the server frees the slots once it notices (nothing to await from outside)
    deadline = time.monotonic() + 10
    while True:
        async with api.http.ws_connect(ws_path(api, d), headers=bearer(alice)) as ws:
            first = await receive_json(ws)
        if first["type"] == "connected":
            break
        assert time.monotonic() < deadline, first
        await asyncio.sleep(0.05)


async def test_ping_pong_and_bad_messages_keep_the_socket_open(api: Api) -> None:
    alice = user()
    d = (await api.create(alice))["id"]
    async with api.http.ws_connect(ws_path(api, d), headers=bearer(alice)) as ws:
        await receive_json(ws)
        await ws.send_json({"type": "ping"})
        pong = await receive_json(ws)
        assert pong["type"] == "pong" and pong["ts"].endswith("Z")
        bad: list[str | bytes] = [
            "not json", '{"type": "subscribe"}', "[1, 2]", '"ping"', "{}",
            '{"type": "segment", "content": "x"}', b"\x00\x01binary",
        ]  # fmt: skip
        for message in bad:
            await ws.send_bytes(message) if isinstance(message, bytes) else await ws.send_str(message)
            error = await receive_json(ws)
            assert error["type"] == "error" and error["code"] == "bad_message", message
            # under the flood limit of 5/s: pace the messages
            await asyncio.sleep(0.25)
        # still open, still read-only, still streaming
        await ws.send_json({"type": "ping"})
        assert (await receive_json(ws))["type"] == "pong"
        status, _, _ = await api.segment(d, alice, "after")
        assert status == 201
        assert (await receive_json(ws))["seq"] == 2
    assert len(await api.events(d, alice)) == 2


async def test_1008_on_flood(api: Api) -> None:
    alice = user()
    d = (await api.create(alice))["id"]
    async with api.http.ws_connect(ws_path(api, d), headers=bearer(alice)) as ws:
        await receive_json(ws)
        for _ in range(20):
            await ws.send_json({"type": "ping"})
        assert await receive_close(ws) == 1008


async def test_4401_when_the_token_expires(api: Api) -> None:
    alice = user()
    d = (await api.create(alice))["id"]
    token = make_token(alice, expires_in=3)
    async with api.http.ws_connect(ws_path(api, d, f"access_token={token}")) as ws:
        assert (await receive_json(ws))["type"] == "connected"
        await api.segment(d, alice, "before expiry")
        assert (await receive_json(ws))["seq"] == 2
        error = await receive_json(ws, timeout=10)
        assert error["type"] == "error" and error["code"] == "token_expired"
        assert await receive_close(ws) == 4401
    # reconnecting with a fresh token and since loses nothing
    await api.segment(d, alice, "meanwhile")
    async with api.http.ws_connect(ws_path(api, d, "since=2"), headers=bearer(alice)) as ws:
        await receive_json(ws)
        assert (await receive_json(ws))["seq"] == 3


async def test_1001_on_sigterm(tmp_path: Path) -> None:
    with ServerProcess(str(tmp_path / "term.db"), "--dev-auth", log_path=tmp_path / "server.log") as srv:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            api = Api(srv, http)
            d = (await api.create("alice"))["id"]
            sockets = [await http.ws_connect(ws_path(api, d), headers=bearer("alice")) for _ in range(3)]
            for ws in sockets:
                assert (await receive_json(ws))["type"] == "connected"
            exit_status = asyncio.ensure_future(asyncio.to_thread(srv.stop))
            codes = [await receive_close(ws) for ws in sockets]
            assert codes == [1001, 1001, 1001]
            assert await asyncio.wait_for(exit_status, 30) == 0
