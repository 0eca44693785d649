"""Per-user limits shared by every process (issue 11): ``--max-sockets-per-user`` and ``--rate-limit``
mean the same with ``--workers 2`` on SQLite, and with two PostgreSQL nodes, as with one process.

Sockets and requests go over fresh connections, so the kernel spreads them over the workers;
the ``X-Ringlog-Worker`` header (workers) or the port (nodes) names the process that answered.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.pgutil import temporary_database
from tests.serverproc import ServerProcess

WAIT = 30.0
WORKER_HEADER = "X-Ringlog-Worker"
PEER_EXPIRY = 4.0
"""``--peer-expiry`` of these servers: a dead process is dropped within 4 × 7/6 s."""


@dataclass
class Setup:
    name: str
    procs: list[ServerProcess]
    http: aiohttp.ClientSession
    turn: int = 0

    def url(self, avoid: str | None = None) -> str:
        """The next endpoint, round robin; with two nodes, one that is not ``avoid``."""
        for _ in range(len(self.procs)):
            proc = self.procs[self.turn % len(self.procs)]
            self.turn += 1
            if avoid is None or str(proc.port) != avoid:
                return proc.url
        raise AssertionError("no other process to try")

    def who(self, response: aiohttp.ClientResponse) -> str:
        return response.headers.get(WORKER_HEADER) or str(response.url.port)

    def kill(self, who: str) -> None:
        """SIGKILL the process that answered as ``who`` (a worker's pid, or a node's port)."""
        for proc in self.procs:
            if str(proc.port) == who:
                proc.kill()
                return
        os.kill(int(who), signal.SIGKILL)  # a worker: its supervisor starts another


async def _open_setup(name: str, tmp_path: Path, *args: str) -> AsyncIterator[Setup]:
    procs: list[ServerProcess] = []
    common = ("--dev-auth", "--peer-expiry", str(PEER_EXPIRY), *args)
    pg = temporary_database() if name.startswith("postgres") else None
    db = await pg.__aenter__() if pg is not None else str(tmp_path / "shared.db")
    try:
        if name == "postgres-two-nodes":
            procs = [
                ServerProcess(db, *common, "--pool-size", "3", log_path=tmp_path / f"n{i}.log").start()
                for i in range(2)
            ]
        else:
            procs = [ServerProcess(db, *common, "--workers", "2", log_path=tmp_path / "sup.log").start()]
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=WAIT)
        ) as http:
            yield Setup(name, procs, http)
    finally:
        for proc in procs:
            proc.__exit__()
        if pg is not None:
            await pg.__aexit__(None, None, None)


SETUPS = ["sqlite-workers", pytest.param("postgres-two-nodes", marks=pytest.mark.postgres)]


@pytest.fixture(params=SETUPS)
async def capped(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setup]:
    async for setup in _open_setup(
        request.param, tmp_path, "--max-sockets-per-user", "2", "--rate-limit", "0"
    ):
        yield setup


async def _create(setup: Setup) -> str:
    async with setup.http.post(
        setup.url() + "/v1/collab/drafts", json={"title": "limits"}, headers={"X-User-Id": "alice"}
    ) as r:
        body = await r.json()
        assert r.status == 201, body
        draft_id: str = body["data"]["id"]
        return draft_id


async def _socket(
    setup: Setup, draft_id: str, avoid: str | None = None
) -> tuple[str, aiohttp.ClientWebSocketResponse | None, dict[str, Any]]:
    """Open a socket: (process, the socket if admitted else None, its first message)."""
    url = setup.url(avoid).replace("http://", "ws://") + f"/v1/ws/drafts/{draft_id}?user_id=alice"
    ws = await setup.http.ws_connect(url)
    who = setup.who(ws._response)
    first = await ws.receive_json(timeout=WAIT)
    if first["type"] == "connected":
        return who, ws, first
    await ws.close()
    return who, None, first


async def _refused_everywhere(setup: Setup, draft_id: str, held_on: list[str]) -> set[str]:
    """Try third sockets until a process holding fewer than 2 of ``held_on`` refuses one (the
    other's report has reached it, about 0.1 s), then 24 more: every one refused.

    Returns the processes the refused attempts landed on.
    """
    deadline = time.monotonic() + WAIT
    while True:
        who, ws, first = await _socket(setup, draft_id)
        if ws is None and held_on.count(who) < 2:
            break
        if ws is not None:
            await ws.close()  # the count had not reached that process yet
        assert time.monotonic() < deadline, "no process without the sockets ever refused a third"
        await asyncio.sleep(0.1)
    refused_on = set()
    for _ in range(24):
        who, ws, first = await _socket(setup, draft_id)
        assert ws is None, f"a third socket was admitted by {who}"
        assert first["code"] == "too_many_sockets", first
        refused_on.add(who)
    return refused_on


async def test_a_third_socket_is_refused_whichever_process_it_lands_on(capped: Setup) -> None:
    draft_id = await _create(capped)
    held = []
    for _ in range(2):
        who, ws, first = await _socket(capped, draft_id)
        assert ws is not None, first
        held.append((who, ws))
    refused_on = await _refused_everywhere(capped, draft_id, [who for who, _ in held])
    assert len(refused_on) == 2, refused_on  # 24 tries on two processes: both refused
    mux_refused_on = set()
    for _ in range(24):  # a /v1/ws socket counts as one socket too, on every process
        ws = await capped.http.ws_connect(capped.url().replace("http://", "ws://") + "/v1/ws?user_id=alice")
        mux_refused_on.add(capped.who(ws._response))
        first = await ws.receive_json(timeout=WAIT)
        await ws.close()
        assert first.get("code") == "too_many_sockets", first
    assert len(mux_refused_on) == 2, mux_refused_on
    # a socket closed anywhere frees a place everywhere
    await held[0][1].close()
    deadline = time.monotonic() + WAIT
    while True:
        who, ws, first = await _socket(capped, draft_id)
        if ws is not None:
            await ws.close()
            break
        assert time.monotonic() < deadline, "the closed socket kept counting"
        await asyncio.sleep(0.1)
    await held[1][1].close()


async def test_the_sockets_of_a_killed_process_stop_counting_within_the_expiry(capped: Setup) -> None:
    draft_id = await _create(capped)
    who, first_ws, first = await _socket(capped, draft_id)
    assert first_ws is not None, first
    holder = who
    second = None
    for _ in range(40):  # both sockets on one process (the kernel spreads connections at random)
        who, ws, first = await _socket(capped, draft_id)
        assert ws is not None, first
        if who == holder:
            second = ws
            break
        await ws.close()
        await asyncio.sleep(0.2)  # let the close reach the other process before the next try
    assert second is not None, "40 sockets never landed on the same process twice"
    (survivor,) = await _refused_everywhere(capped, draft_id, [holder, holder]) - {holder}
    killed_at = time.monotonic()
    capped.kill(holder)
    # the survivor counts the dead process's sockets until it expires them: within expiry + half
    # a heartbeat (PEER_EXPIRY × 7/6); the wait is bounded well beyond that. Sockets landing on
    # a replacement worker (which never heard of the dead one) prove nothing and are closed.
    deadline = killed_at + PEER_EXPIRY * 7 / 6 + WAIT
    first_try_after: float | None = None
    refused_after_kill = 0
    while True:
        try:
            who, ws, first = await _socket(capped, draft_id, avoid=holder)
        except aiohttp.ClientError:
            who, ws, first = "", None, {}  # the supervisor is replacing the worker
        if who == survivor and first_try_after is None:
            first_try_after = time.monotonic() - killed_at
        if ws is not None:
            await ws.close()
            if who == survivor:
                break
        elif who == survivor:
            assert first["code"] == "too_many_sockets", first
            refused_after_kill += 1
        assert time.monotonic() < deadline, "a killed process's sockets kept counting"
        await asyncio.sleep(0.1)
    # expiry is at least PEER_EXPIRY − one heartbeat after the kill: a survivor tried well
    # before that must still have counted the dead sockets
    assert first_try_after is not None
    if first_try_after < PEER_EXPIRY / 3:
        assert refused_after_kill >= 1


@pytest.fixture(params=SETUPS)
async def rate_limited(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setup]:
    async for setup in _open_setup(
        request.param, tmp_path, "--rate-limit", "5", "--max-sockets-per-user", "0"
    ):
        yield setup


async def test_a_user_on_two_processes_is_limited_to_about_the_rate_in_total(rate_limited: Setup) -> None:
    """Two keep-alive connections on different processes: the grants of both together stay within
    rate × T + the burst on each + one report interval (docs/API.md), far below 2 × (burst + rate × T)."""
    rate, burst = 5.0, 10.0
    sessions: dict[str, tuple[aiohttp.ClientSession, str]] = {}
    try:
        for i in range(40):  # one keep-alive connection on each process
            url = rate_limited.procs[i % len(rate_limited.procs)].url
            http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1), timeout=aiohttp.ClientTimeout(total=WAIT)
            )
            async with http.get(url + "/healthz") as r:
                who = rate_limited.who(r)
            if who in sessions:
                await http.close()
                continue
            sessions[who] = (http, url)
            if len(sessions) == 2:
                break
        assert len(sessions) == 2, "40 connections all landed on one process"
        (a, url_a), (b, url_b) = sessions.values()
        async with a.post(
            url_a + "/v1/collab/drafts", json={"title": "rate"}, headers={"X-User-Id": "owner"}
        ) as r:
            assert r.status == 201
            draft_id = (await r.json())["data"]["id"]
        granted = refused = 0
        workers_seen = set()
        started = time.monotonic()
        for i in range(400):
            if time.monotonic() - started > 4.0:
                break
            http, url = ((a, url_a), (b, url_b))[i % 2]
            async with http.post(
                url + f"/v1/collab/drafts/{draft_id}/segments",
                json={"content": f"s{i}"},
                headers={"X-User-Id": "owner"},
            ) as r:
                workers_seen.add(rate_limited.who(r))
                if r.status == 201:
                    granted += 1
                else:
                    assert r.status == 429, await r.text()
                    refused += 1
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
    finally:
        for http, _url in sessions.values():
            await http.close()
    assert len(workers_seen) == 2
    assert refused > 0
    shared_bound = rate * elapsed + 2 * burst + 2 * rate * 0.2 + 3  # the first burst on each, one interval
    unshared = 2 * (burst + rate * elapsed)
    assert granted <= shared_bound < unshared, (granted, shared_bound, unshared, elapsed)
