"""The caller's own feed across real ``ringlog serve`` processes sharing one log (API.md v2).

Two servers on one SQLite file, and two on one PostgreSQL database: events appended through one
are in the feed read through the other (a long-poll there wakes for them), and both serve the
same feed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.pgutil import temporary_database
from tests.serverproc import ServerProcess

ARGS = ("--dev-auth", "--rate-limit", "0")


@contextlib.asynccontextmanager
async def _two_servers(kind: str, tmp_path: Path) -> AsyncIterator[list[str]]:
    async with contextlib.AsyncExitStack() as stack:
        if kind == "sqlite":
            db = str(tmp_path / "shared.db")
        else:
            db = await stack.enter_async_context(temporary_database())
        procs: list[ServerProcess] = []
        try:
            for i in range(2):
                procs.append(ServerProcess(db, *ARGS, log_path=tmp_path / f"s{i}.log").start())
            yield [p.url for p in procs]
        finally:
            for proc in procs:
                proc.__exit__()


async def _call(http: aiohttp.ClientSession, method: str, url: str, user: str, body: Any = None) -> Any:
    async with http.request(method, url, json=body, headers={"X-User-Id": user}) as r:
        payload = await r.json()
        assert r.status < 300, payload
        return payload


async def _whole_feed(http: aiohttp.ClientSession, base: str, user: str) -> list[int]:
    positions: list[int] = []
    after = 0
    for _ in range(100):
        page = await _call(http, "GET", f"{base}/v1/me/events?after={after}&limit=7", user)
        positions += [row["position"] for row in page["data"]]
        if not page["data"]:
            return positions
        after = page["last_position"]
    raise AssertionError("paging the feed did not end")


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_feed_read_on_one_server_sees_appends_through_the_other(kind: str, tmp_path: Path) -> None:
    async with (
        _two_servers(kind, tmp_path) as (a, b),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
    ):
        start = (await _call(http, "GET", f"{b}/v1/me/events", "bob"))["last_position"]
        draft = (await _call(http, "POST", f"{a}/v1/collab/drafts", "alice", {"title": "on A"}))["data"]["id"]
        await _call(
            http,
            "POST",
            f"{a}/v1/collab/drafts/{draft}/collaborators",
            "alice",
            {"user_id": "bob", "role": "viewer"},
        )
        got: list[str] = []
        after = start
        for _ in range(10):  # each long-poll on B ends when B has indexed A's commit
            page = await _call(http, "GET", f"{b}/v1/me/events?after={after}&wait=10", "bob")
            got += [row["event"]["type"] for row in page["data"]]
            after = page["last_position"]
            if got:
                break
        assert got == ["collab.collaborator_added"]
        for k in range(12):
            base = (a, b)[k % 2]
            await _call(http, "POST", f"{base}/v1/collab/drafts", "carol", {"title": f"d{k}"})
        # read your writes on the server that took the last append
        on_b = await _whole_feed(http, b, "carol")
        assert len(on_b) == 12
        # the other server wakes a long-poll when it has indexed the last one too
        page = await _call(http, "GET", f"{a}/v1/me/events?after={on_b[-1] - 1}&wait=10", "carol")
        assert [row["position"] for row in page["data"]] == [on_b[-1]]
        assert await _whole_feed(http, a, "carol") == on_b


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_subscribe_me_on_one_server_streams_appends_through_the_other(
    kind: str, tmp_path: Path
) -> None:
    async with (
        _two_servers(kind, tmp_path) as (a, b),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
    ):
        first = (await _call(http, "POST", f"{a}/v1/collab/drafts", "bob", {"title": "before"}))["data"]["id"]
        url = b.replace("http://", "ws://") + "/v1/ws?user_id=bob"
        async with http.ws_connect(url) as ws:
            assert (await ws.receive_json(timeout=30))["type"] == "connected"
            await ws.send_json({"type": "subscribe_me", "after": 0})
            subscribed = await ws.receive_json(timeout=30)
            assert subscribed["type"] == "subscribed_me", subscribed
            made = [first]
            for k in range(6):  # through the other server, while the socket is live on this one
                base = (a, b)[k % 2]
                made.append(
                    (await _call(http, "POST", f"{base}/v1/collab/drafts", "bob", {"title": f"d{k}"}))[
                        "data"
                    ]["id"]
                )
                await _call(http, "POST", f"{base}/v1/collab/drafts", "carol", {"title": "not bob's"})
            got: list[dict[str, Any]] = []
            while len(got) < len(made):
                message = await ws.receive_json(timeout=30)
                assert message["type"] == "me", message
                got.append(message)
        assert [m["event"]["draft_id"] for m in got] == made
        positions = [m["position"] for m in got]
        assert positions == sorted(set(positions))
