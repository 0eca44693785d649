"""``GET /v1/ws`` against a real ``ringlog serve`` on SQLite and on PostgreSQL (API.md v2 "One
socket, many drafts"): JWT on the query string, the subscription cap from its environment
variable, catch-up then live per draft under concurrent writers, unsubscribe, the gauge."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.e2e.apikit import TIMEOUT, Api
from tests.pgutil import temporary_database
from tests.serverproc import ServerProcess, make_token

ENV = {"RINGLOG_MAX_SUBSCRIPTIONS_PER_SOCKET": "2"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ServerProcess]:
    if request.param == "sqlite":
        with ServerProcess(
            str(tmp_path / "m.db"), "--rate-limit", "0", env=ENV, log_path=tmp_path / "s.log"
        ) as p:
            yield p
        return
    async with temporary_database() as db:
        with ServerProcess(
            db, "--rate-limit", "0", "--pool-size", "4", env=ENV, log_path=tmp_path / "s.log"
        ) as p:
            yield p


async def receive(ws: aiohttp.ClientWebSocketResponse) -> Any:
    msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return msg.json()


async def test_one_socket_follows_two_drafts(server: ServerProcess) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        api = Api(server, http)
        d1, d2, d3 = [(await api.create("alice"))["id"] for _ in range(3)]
        for i in range(3):
            assert (await api.segment(d1, "alice", f"before {i}"))[0] == 201
        token = make_token("alice", expires_in=300)
        async with http.ws_connect(f"{server.ws_url}/v1/ws?access_token={token}") as ws:
            assert (await receive(ws))["type"] == "connected"
            await ws.send_str(orjson.dumps({"type": "subscribe", "draft_id": d1, "since": 0}).decode())
            await ws.send_str(orjson.dumps({"type": "subscribe", "draft_id": d2}).decode())
            await ws.send_str(orjson.dumps({"type": "subscribe", "draft_id": d3}).decode())

            async def write(d: str, n: int) -> None:
                for i in range(n):
                    assert (await api.segment(d, "alice", f"live {i}"))[0] == 201

            writers = asyncio.gather(write(d1, 15), write(d2, 15))
            received: list[dict[str, Any]] = []
            d2_from = -1
            for _ in range(1000):
                message = await receive(ws)
                received.append(message)
                if message["type"] == "subscribed" and message["draft_id"] == d2:
                    d2_from = message["head_seq"]
                seqs = {
                    d: [m["seq"] for m in received if m.get("draft_id") == d and "seq" in m] for d in (d1, d2)
                }
                if seqs[d1][-1:] == [19] and (seqs[d2][-1:] == [16] or d2_from == 16):
                    break
            await writers
            kinds = [(m["type"], m.get("code")) for m in received if m.get("draft_id") == d3]
            assert kinds == [("error", "too_many_subscriptions")]
            assert seqs[d1] == list(range(1, 20))
            assert seqs[d2] == list(range(d2_from + 1, 17))  # after head_seq, as subscribed said
            _, metrics, _ = await api.call("GET", "/metrics")
            assert re.search(rb"^ringlog_ws_subscriptions 2\.0$", metrics, re.M)
            await ws.send_str(orjson.dumps({"type": "unsubscribe", "draft_id": d2}).decode())
            assert await receive(ws) == {"type": "unsubscribed", "draft_id": d2}
            await write(d2, 1)
            await write(d1, 1)
            assert (await receive(ws))["seq"] == 20  # d1's; d2's new event never came
