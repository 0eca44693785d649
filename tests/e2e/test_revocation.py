"""Live revocation against real ``ringlog serve`` processes (API.md v2 "Revocation is live"):
one node on SQLite, two nodes on one PostgreSQL database. The removed user's sockets on every
node get the removal event, ``access_revoked`` and close 4403 within 1 s of the commit; other
users' sockets and a demoted user's socket stay open."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.test_multinode import Node, _new_listen_pid
from tests.pgutil import temporary_database
from tests.serverproc import ServerProcess

REVOCATION_BOUND = 1.0
"""Seconds from the DELETE's response (the commit) to each close: API.md's bound."""
ARGS = ("--dev-auth", "--rate-limit", "0")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def nodes(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[Node]]:
    """One SQLite node (a SQLite log has one owner), or nodes A and B on one PostgreSQL database."""
    if request.param == "sqlite":
        with ServerProcess(str(tmp_path / "r.db"), *ARGS, log_path=tmp_path / "a.log") as proc:
            yield [Node("A", proc)]
        return
    async with temporary_database() as db:
        a = Node("A", ServerProcess(db, *ARGS, "--pool-size", "4", log_path=tmp_path / "a.log"))
        b = Node("B", ServerProcess(db, *ARGS, "--pool-size", "4", log_path=tmp_path / "b.log"))
        try:
            a.proc.start()
            a.listen_pid = await _new_listen_pid(db, set())
            b.proc.start()
            b.listen_pid = await _new_listen_pid(db, {a.listen_pid})
            yield [a, b]
        finally:
            for node in (a, b):
                node.proc.__exit__()


async def call(
    http: aiohttp.ClientSession, node: Node, method: str, path: str, user: str, body: Any = None
) -> Any:
    async with http.request(method, node.url + path, json=body, headers={"X-User-Id": user}) as r:
        assert r.status in (200, 201), await r.text()
        return (await r.json())["data"]


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> Any:
    """The next message that is not presence (API.md v2)."""
    for _ in range(1000):
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        parsed = msg.json()
        if parsed.get("type") not in ("presence", "presence_sync"):
            return parsed
    raise AssertionError("only presence messages")


async def test_revocation_reaches_every_node(nodes: list[Node]) -> None:
    first, last = nodes[0], nodes[-1]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        d = (await call(http, first, "POST", "/v1/collab/drafts", "alice", {"title": "T"}))["id"]
        for user, role in (("bob", "contributor"), ("vera", "viewer"), ("dan", "contributor")):
            await call(
                http,
                first,
                "POST",
                f"/v1/collab/drafts/{d}/collaborators",
                "alice",
                {"user_id": user, "role": role},
            )
        await call(http, first, "POST", f"/v1/collab/drafts/{d}/ring/pass", "alice", {"to_user_id": "bob"})
        sockets: dict[tuple[str, str], aiohttp.ClientWebSocketResponse] = {}
        try:
            for node in nodes:
                for user in ("bob", "vera", "dan"):
                    ws = await http.ws_connect(
                        f"{node.ws_url}/v1/ws/drafts/{d}?user_id={user}", autoclose=False
                    )
                    sockets[(node.name, user)] = ws
                    assert (await next_json(ws))["type"] == "connected"
            await call(
                http, last, "PATCH", f"/v1/collab/drafts/{d}/collaborators/dan", "alice", {"role": "viewer"}
            )
            await call(http, last, "DELETE", f"/v1/collab/drafts/{d}/collaborators/bob", "alice")
            committed = time.monotonic()
            for node in nodes:
                bob = sockets[(node.name, "bob")]
                assert (await next_json(bob))["type"] == "collab.role_changed"
                removal = await next_json(bob)
                assert (removal["type"], removal["data"]) == (
                    "collab.collaborator_removed",
                    {"collaborator_id": "bob", "role": "contributor"},
                )
                error = await next_json(bob)
                assert (error["type"], error["code"], error["draft_id"]) == ("error", "access_revoked", d)
                msg = await bob.receive(timeout=10)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                assert bob.close_code == 4403
                assert time.monotonic() - committed < REVOCATION_BOUND, node.name
            for node in nodes:
                for user in ("vera", "dan"):  # untouched, and dan was demoted: still open
                    ws = sockets[(node.name, user)]
                    assert [(await next_json(ws))["type"] for _ in range(3)] == [
                        "collab.role_changed",
                        "collab.collaborator_removed",
                        "collab.ring_passed",
                    ]
                    await ws.send_json({"type": "ping"})
                    assert (await next_json(ws))["type"] == "pong"
            for node in nodes:
                async with http.get(node.url + f"/v1/collab/drafts/{d}", headers={"X-User-Id": "bob"}) as r:
                    assert r.status == 403
        finally:
            for ws in sockets.values():
                await ws.close()
