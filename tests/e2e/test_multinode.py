"""Two real ``ringlog serve`` processes on one PostgreSQL database (issue 5, the server half).

Each test starts node A, waits for its LISTEN connection, then starts node B, so each node's
listener backend is known by pid. Clients talk to both nodes over real HTTP and WebSockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.pgutil import temporary_database
from tests.serverproc import ServerProcess

pytestmark = pytest.mark.postgres

LISTEN_APP = "ringlog-listen"  # application_name of a node's LISTEN connection (docs/POSTGRES.md)
WRITERS = 6
WAIT = 30.0  # seconds any single expected delivery may take at most


@dataclass
class Node:
    name: str
    proc: ServerProcess
    listen_pid: int = 0

    @property
    def url(self) -> str:
        return self.proc.url

    @property
    def ws_url(self) -> str:
        return self.proc.ws_url


@dataclass
class Cluster:
    db: str
    a: Node
    b: Node
    http: aiohttp.ClientSession
    origin: dict[tuple[str, int], str] = field(default_factory=dict)
    """(draft_id, seq) -> name of the node the append that produced it went through."""

    @property
    def nodes(self) -> tuple[Node, Node]:
        return (self.a, self.b)

    async def request(
        self, node: Node, method: str, path: str, user: str, body: Any = None, key: str | None = None
    ) -> tuple[int, Any]:
        headers = {"X-User-Id": user}
        if key is not None:
            headers["Idempotency-Key"] = key
        async with self.http.request(method, node.url + path, json=body, headers=headers) as r:
            return r.status, await r.json()

    async def create(self, node: Node, user: str, title: str) -> str:
        status, body = await self.request(node, "POST", "/v1/collab/drafts", user, {"title": title})
        assert status == 201, body
        draft_id: str = body["data"]["id"]
        self.origin[(draft_id, 1)] = node.name
        return draft_id

    async def append(
        self, node: Node, draft_id: str, user: str, content: str, key: str | None = None
    ) -> tuple[int, Any]:
        status, body = await self.request(
            node, "POST", f"/v1/collab/drafts/{draft_id}/segments", user, {"content": content}, key
        )
        if status == 201:
            self.origin.setdefault((draft_id, body["data"]["seq"]), node.name)
        return status, body

    async def events(self, node: Node, draft_id: str, user: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The whole log of a draft through ``/events``, page by page."""
        out: list[dict[str, Any]] = []
        for _ in range(10_000):
            status, body = await self.request(
                node, "GET", f"/v1/collab/drafts/{draft_id}/events?since={len(out)}&limit={limit}", user
            )
            assert status == 200, body
            out.extend(body["data"])
            if not body["data"] or len(out) >= body["head_seq"]:
                return out
        raise AssertionError("paging /events did not end")


async def _listen_pids(db: str) -> set[int]:
    conn = await asyncpg.connect(db, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
            LISTEN_APP,
        )
        return {int(r["pid"]) for r in rows}
    finally:
        await conn.close()


async def _until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = WAIT) -> None:
    """Bounded polling of a condition that nothing can be awaited for (the database's view)."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.05)


async def _new_listen_pid(db: str, known: set[int]) -> int:
    found: set[int] = set()

    async def appeared() -> bool:
        found.clear()
        found.update(await _listen_pids(db) - known)
        return len(found) == 1

    await _until(appeared, "a new LISTEN connection shows in pg_stat_activity")
    return found.pop()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Nodes A and B on one throw-away database, dev auth on, rate limiting off."""
    async with temporary_database() as db:
        args = ("--dev-auth", "--rate-limit", "0", "--pool-size", "4")
        a = Node("A", ServerProcess(db, *args, log_path=tmp_path / "a.log"))
        b = Node("B", ServerProcess(db, *args, log_path=tmp_path / "b.log"))
        try:
            a.proc.start()
            a.listen_pid = await _new_listen_pid(db, set())
            b.proc.start()
            b.listen_pid = await _new_listen_pid(db, {a.listen_pid})
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as http:
                yield Cluster(db, a, b, http)
        finally:
            for node in (a, b):
                node.proc.__exit__()  # SIGKILL whatever still runs: the database is dropped next


class Socket:
    """A WebSocket client that collects a draft's events, and can resume elsewhere with ``since``."""

    def __init__(self, cluster: Cluster, draft_id: str, user: str) -> None:
        self.cluster = cluster
        self.draft_id = draft_id
        self.user = user
        self.events: list[dict[str, Any]] = []
        self.nodes_used: list[str] = []

    @property
    def last_seq(self) -> int:
        return self.events[-1]["seq"] if self.events else 0

    @contextlib.asynccontextmanager
    async def connect(self, node: Node) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        url = f"{node.ws_url}/v1/ws/drafts/{self.draft_id}?since={self.last_seq}&user_id={self.user}"
        async with self.cluster.http.ws_connect(url, autoclose=False) as ws:
            hello = await ws.receive_json(timeout=WAIT)
            assert hello["type"] == "connected" and hello["head_seq"] >= self.last_seq, hello
            self.nodes_used.append(node.name)
            yield ws

    async def collect(self, ws: aiohttp.ClientWebSocketResponse, until_seq: int) -> bool:
        """Receive events until ``until_seq``; False if the server closed the socket first."""
        while self.last_seq < until_seq:
            msg = await ws.receive(timeout=WAIT)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return False
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            event = msg.json()
            if event["type"] in ("presence", "presence_sync"):  # API.md v2: not events
                continue
            assert event["type"].startswith("collab."), event
            self.events.append(event)
        return True

    async def follow(self, node: Node, until_seq: int) -> None:
        async with self.connect(node) as ws:
            assert await self.collect(ws, until_seq), f"{node.name} closed the socket at {self.last_seq}"

    def assert_exactly(self, log: list[dict[str, Any]]) -> None:
        assert [e["seq"] for e in self.events] == list(range(1, len(log) + 1))
        assert self.events == log


def _segments(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["segment"]["content"] for e in events if e["type"] == "collab.segment_added"]


async def test_two_nodes_serve_one_log_to_every_socket(cluster: Cluster) -> None:
    """6 writers alternate nodes; every socket on either node gets every event once, in order."""
    appends = 10
    final = 1 + appends
    users = [f"writer{i}" for i in range(WRITERS)]
    drafts = [await cluster.create(cluster.nodes[i % 2], u, f"draft of {u}") for i, u in enumerate(users)]
    # before any append: one socket per node and draft, plus one that will move from A to B
    stay = {
        (d, n.name): Socket(cluster, d, u) for d, u in zip(drafts, users, strict=True) for n in cluster.nodes
    }
    movers = [Socket(cluster, d, u) for d, u in zip(drafts, users, strict=True)]
    async with contextlib.AsyncExitStack() as stack:
        live = {k: await stack.enter_async_context(s.connect(cluster.a if k[1] == "A" else cluster.b))
                for k, s in stay.items()}  # fmt: skip
        first_half = [await stack.enter_async_context(m.connect(cluster.a)) for m in movers]

        async def write(i: int) -> None:
            draft_id, user = drafts[i], users[i]
            for k in range(appends):
                node, other = cluster.nodes[(i + k) % 2], cluster.nodes[(i + k + 1) % 2]
                key = f"{user}-{k}" if k % 3 == 0 else None
                content = f"{user} #{k} via {node.name}"
                status, body = await cluster.append(node, draft_id, user, content, key)
                assert status == 201, body
                seq = body["data"]["seq"]
                assert seq == k + 2 and body["data"]["segment"]["content"] == content
                # read-your-writes on the other node, at once
                status, got = await cluster.request(other, "GET", f"/v1/collab/drafts/{draft_id}", user)
                assert status == 200 and got["data"]["seq"] == seq, got
                assert got["data"]["segments"][-1]["content"] == content
                if key is not None:  # a retry on the other node replays the first response
                    status, again = await cluster.append(other, draft_id, user, content, key)
                    assert (status, again) == (201, body)

        async def move(m: Socket, ws: aiohttp.ClientWebSocketResponse) -> None:
            # leave A part-way through the writes, resume on B from the last seq processed
            assert await m.collect(ws, 1 + appends // 2)
            await ws.close()
            await m.follow(cluster.b, final)

        await asyncio.gather(
            *(write(i) for i in range(WRITERS)),
            *(s.collect(live[k], final) for k, s in stay.items()),
            *(move(m, ws) for m, ws in zip(movers, first_half, strict=True)),
        )

    for i, draft_id in enumerate(drafts):
        on_a = await cluster.events(cluster.a, draft_id, users[i], limit=3)
        on_b = await cluster.events(cluster.b, draft_id, users[i], limit=4)
        assert on_a == on_b == await cluster.events(cluster.a, draft_id, users[i])
        assert len(on_a) == final  # the idempotent retries appended nothing
        assert _segments(on_a) == [
            f"{users[i]} #{k} via {cluster.nodes[(i + k) % 2].name}" for k in range(appends)
        ]
        through = {cluster.origin[(draft_id, e["seq"])] for e in on_a}
        assert through == {"A", "B"}
        for n in cluster.nodes:
            stay[(draft_id, n.name)].assert_exactly(on_a)
        movers[i].assert_exactly(on_a)
        assert movers[i].nodes_used == ["A", "B"]


async def test_delivery_continues_when_the_listen_connection_is_killed(cluster: Cluster) -> None:
    """A's LISTEN backend is terminated mid-stream; A's socket still gets all of B's appends."""
    draft_id = await cluster.create(cluster.b, "alice", "listen")
    sock = Socket(cluster, draft_id, "alice")
    async with sock.connect(cluster.a) as ws:
        assert await sock.collect(ws, 1)
        seq = 1
        for round_ in range(3):
            conn = await asyncpg.connect(cluster.db, timeout=5)
            try:
                assert await conn.fetchval("SELECT pg_terminate_backend($1)", cluster.a.listen_pid)
            finally:
                await conn.close()
            # appends through B while A has no listener, then after A reconnected it
            for k in range(3):
                status, body = await cluster.append(cluster.b, draft_id, "alice", f"r{round_} k{k}")
                assert status == 201, body
                seq = body["data"]["seq"]
            assert await sock.collect(ws, seq)
            cluster.a.listen_pid = await _new_listen_pid(cluster.db, {cluster.b.listen_pid})
            status, body = await cluster.append(cluster.b, draft_id, "alice", f"r{round_} after")
            assert status == 201, body
            seq = body["data"]["seq"]
            assert await sock.collect(ws, seq)
        # the new listener is woken by NOTIFY: far quicker than the once-a-second check
        delays = []
        for k in range(7):
            started = time.monotonic()
            status, body = await cluster.append(cluster.b, draft_id, "alice", f"timed {k}")
            assert status == 201, body
            seq = body["data"]["seq"]
            assert await sock.collect(ws, seq)
            delays.append(time.monotonic() - started)
        assert sorted(delays)[3] < 0.25, delays
    sock.assert_exactly(await cluster.events(cluster.b, draft_id, "alice"))
    assert seq == 1 + 3 * 4 + 7


async def test_clients_resume_on_the_survivor_when_a_node_is_killed(cluster: Cluster) -> None:
    """SIGKILL A during appends: retries with the same key go to B; nothing acknowledged is lost."""
    appends = 12
    final = 1 + appends
    users = [f"writer{i}" for i in range(WRITERS)]
    drafts = [await cluster.create(cluster.b, u, f"draft of {u}") for u in users]
    acked: dict[str, list[str]] = {d: [] for d in drafts}
    enough_acked = asyncio.Event()
    failed_on_a = 0

    async def write(i: int) -> None:
        nonlocal failed_on_a
        draft_id, user = drafts[i], users[i]
        for k in range(appends):
            content, key = f"{user} #{k}", f"{user}-{k}"
            node = cluster.nodes[(i + k) % 2]
            try:
                status, body = await cluster.append(node, draft_id, user, content, key)
            except (aiohttp.ClientError, TimeoutError):
                assert node is cluster.a  # only the killed node may fail
                failed_on_a += 1
                status, body = await cluster.append(cluster.b, draft_id, user, content, key)
            assert status == 201, body
            assert body["data"]["segment"]["content"] == content and body["data"]["seq"] == k + 2
            acked[draft_id].append(content)
            if sum(map(len, acked.values())) >= WRITERS * appends // 3:
                enough_acked.set()

    async def kill_a() -> None:
        await asyncio.wait_for(enough_acked.wait(), WAIT)
        await asyncio.to_thread(cluster.a.proc.kill)

    async def read(s: Socket) -> None:
        try:
            async with s.connect(cluster.a) as ws:
                finished = await s.collect(ws, final)
        except aiohttp.ClientConnectionError:
            finished = False  # A was killed before this socket reached it
        if not finished:  # A died under us: resume on B from the last seq processed
            await s.follow(cluster.b, final)

    sockets = [Socket(cluster, d, u) for d, u in zip(drafts, users, strict=True)]
    await asyncio.gather(*(write(i) for i in range(WRITERS)), kill_a(), *(read(s) for s in sockets))

    assert cluster.a.proc.proc is not None and cluster.a.proc.proc.returncode == -9
    for s, (draft_id, user) in zip(sockets, zip(drafts, users, strict=True), strict=True):
        log = await cluster.events(cluster.b, draft_id, user)
        assert _segments(log) == acked[draft_id] == [f"{user} #{k}" for k in range(appends)]
        s.assert_exactly(log)
    assert failed_on_a > 0 and any(s.nodes_used == ["A", "B"] for s in sockets)  # the kill cut in

    # A comes back (same port) and follows B again: history from the log, then B's appends live
    await asyncio.to_thread(cluster.a.proc.start)
    back = Socket(cluster, drafts[0], users[0])
    async with back.connect(cluster.a) as ws:
        assert await back.collect(ws, final)
        status, body = await cluster.append(cluster.b, drafts[0], users[0], "after the restart")
        assert status == 201, body
        assert await back.collect(ws, final + 1)
    back.assert_exactly(await cluster.events(cluster.b, drafts[0], users[0]))
    assert cluster.a.proc.stop() == 0
    assert cluster.b.proc.stop() == 0
    verify = subprocess.run(
        [sys.executable, "-m", "server.cli", "verify", "--db", cluster.db],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def test_one_draft_written_through_both_nodes_at_once(cluster: Cluster) -> None:
    """Races between nodes: concurrent appends, If-Match, one idempotency key, passing the ring."""
    a, b = cluster.a, cluster.b
    draft_id = await cluster.create(a, "alice", "shared")
    path = f"/v1/collab/drafts/{draft_id}"
    socks = [Socket(cluster, draft_id, "alice") for _ in range(2)]
    async with socks[0].connect(a) as ws_a, socks[1].connect(b) as ws_b:
        for who, node in (("bob", b), ("carol", a)):
            status, body = await cluster.request(
                node, "POST", f"{path}/collaborators", "alice", {"user_id": who, "role": "contributor"}
            )
            assert status == 201, body

        # ten appends at once, half through each node: all accepted, each once
        burst = await asyncio.gather(
            *(cluster.append(cluster.nodes[k % 2], draft_id, "alice", f"burst {k}") for k in range(10))
        )
        assert [s for s, _ in burst] == [201] * 10, burst
        assert sorted(body["data"]["seq"] for _, body in burst) == list(range(4, 14))

        # first writer wins across nodes
        raced = await asyncio.gather(
            *(
                _post_if_match(cluster, node, draft_id, "alice", f"if-match {node.name}", 13)
                for node in (a, b)
            )
        )
        assert sorted(s for s, _ in raced) == [201, 412], raced

        # one idempotency key sent to both nodes at once: one append, the same answer twice
        twice = await asyncio.gather(
            *(cluster.append(node, draft_id, "alice", "once", "the-key") for node in (a, b))
        )
        assert twice[0] == twice[1] and twice[0][0] == 201, twice
        once_seq = twice[0][1]["data"]["seq"]
        assert once_seq == 15

        # the ring moves between nodes; each holder acts through the node the last pass did not use
        status, body = await cluster.request(a, "POST", f"{path}/ring/pass", "alice", {"to_user_id": "bob"})
        assert status == 200 and body["data"]["seq"] == 16, body
        status, body = await cluster.append(b, draft_id, "bob", "bob has the ring")
        assert status == 201, body
        status, body = await cluster.request(b, "POST", f"{path}/ring/pass", "bob", {"to_user_id": "carol"})
        assert status == 200, body
        status, body = await cluster.append(a, draft_id, "carol", "carol has the ring")
        assert status == 201 and body["data"]["seq"] == 19, body
        for node in (a, b):
            status, body = await cluster.append(node, draft_id, "bob", "not mine any more")
            assert status == 409 and body["error"]["code"] == "not_ring_holder", body

        final = 19
        assert await socks[0].collect(ws_a, final) and await socks[1].collect(ws_b, final)
    log = await cluster.events(b, draft_id, "alice")
    assert len(log) == final and _segments(log).count("once") == 1
    # creating a draft is idempotent across nodes too
    created = [
        await cluster.request(node, "POST", "/v1/collab/drafts", "dave", {"title": "t"}, "create-key")
        for node in (a, b)
    ]
    assert created[0] == created[1] and created[0][0] == 201, created
    status, body = await cluster.request(b, "GET", "/v1/collab/drafts", "dave")
    assert status == 200 and [d["id"] for d in body["data"]] == [created[0][1]["data"]["id"]], body
    for s in socks:
        s.assert_exactly(log)
    for node in (a, b):
        status, body = await cluster.request(node, "GET", path, "carol")
        assert status == 200 and body["data"]["seq"] == final
        assert body["data"]["ring_state"]["holders_history"] == ["alice", "bob", "carol"]


async def _post_if_match(
    cluster: Cluster, node: Node, draft_id: str, user: str, content: str, seq: int
) -> tuple[int, Any]:
    headers = {"X-User-Id": user, "If-Match": f'"{seq}"'}
    url = f"{node.url}/v1/collab/drafts/{draft_id}/segments"
    async with cluster.http.post(url, json={"content": content}, headers=headers) as r:
        return r.status, await r.json()


async def test_a_long_poll_on_one_node_wakes_for_an_append_on_the_other(cluster: Cluster) -> None:
    draft_id = await cluster.create(cluster.a, "alice", "long poll")
    path = f"/v1/collab/drafts/{draft_id}/events?since=1&wait=20"
    poll = asyncio.ensure_future(cluster.request(cluster.a, "GET", path, "alice"))
    try:
        # nothing tells when the poll is parked on A, so let it sit half a second (still pending:
        # it was not answered early) before B appends
        done, _ = await asyncio.wait({poll}, timeout=0.5)
        assert not done
        started = time.monotonic()
        status, body = await cluster.append(cluster.b, draft_id, "alice", "wake up")
        assert status == 201, body
        status, body = await asyncio.wait_for(poll, WAIT)
    finally:
        poll.cancel()
    assert status == 200 and [e["seq"] for e in body["data"]] == [2] and body["head_seq"] == 2, body
    assert _segments(body["data"]) == ["wake up"]
    assert time.monotonic() - started < 15  # woken by the append, not by the end of the wait
