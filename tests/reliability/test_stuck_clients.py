"""Stuck clients at scale (issue 6): many sockets on one draft, some of which never read.

One server (small ``--ws-queue-size``), two runs on two drafts of it, each appending ~10 KB
segments in lock step (the next append once every healthy socket has the previous one), the
first ``WARMUP`` of each run left out of its latencies:

* baseline: ``SOCKETS - STUCK`` healthy sockets and nothing else, ``BASELINE_APPENDS`` appends;
* stuck: the same healthy sockets plus ``STUCK`` raw TCP connections with a small receive buffer
  that never read (``tests/e2e/test_slow_socket.raw_websocket``); appends until the server has
  closed all of them (its slow-close counter), then ``APPENDS_AFTER_CLOSE`` more. The stuck
  clients then read what they had buffered; they must start within the server's close timeout
  (5 s, ``server/ws.py``), after which a peer that does not read is dropped without its tail.

Both runs have the same healthy sockets, so the test process does the same work in both and the
difference is what the stuck sockets cost the server. (An all-healthy baseline of ``SOCKETS``
sockets gives the stuck run the advantage of 10% fewer frames to parse in the test process.)

Checked, without timing anything (speed is for the benchmarks): appends advance in lock step with
the healthy sockets, so the stuck sockets being closed at all proves they never held the others
back; every healthy socket gets every event in order; every stuck socket is
closed with 1013, and what it had buffered is ``connected``, then events in order without a gap,
then the 1013 close; each resumes with ``since`` = its last seq and gets exactly the rest; the
server's RSS grows by less than what the bounded queues can hold plus a margin. Both runs'
latency figures are printed for a person to read, never asserted: a timed assertion on a shared
2-core machine measures the machine, not ringlog.

Counts can be raised for a manual run: ``RINGLOG_STUCK_SOCKETS=1000 RINGLOG_STUCK_STUCK=100``.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.e2e.apikit import TIMEOUT, Api, receive_json
from tests.e2e.test_slow_socket import raw_websocket, read_frame
from tests.serverproc import ServerProcess

SOCKETS = int(os.environ.get("RINGLOG_STUCK_SOCKETS", "300"))
STUCK = int(os.environ.get("RINGLOG_STUCK_STUCK", "30"))
QUEUE = 8
CONTENT = "q" * 10_000  # the segment limit; the event frame is ~10.3 KB
APPENDS_AFTER_CLOSE = 30  # then the stuck clients read: within the server's 5 s close timeout
MAX_APPENDS = 600
BASELINE_APPENDS = 100
WARMUP = 10  # appends of each run left out of its latencies
HIGH_WATER = 256 * 1024  # server/subscriber.py: a socket's transport buffer before its backlog is used
USER = "owner"


def rss(pid: int) -> int:
    """VmRSS of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def p99(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


class Healthy:
    """The healthy sockets of a run: each records (seq, arrival time) for every event."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seqs: list[list[int]] = [[] for _ in range(count)]
        self.arrivals: dict[int, list[float]] = {}
        self.complete: dict[int, asyncio.Event] = {}
        self.errors: list[str] = []
        self.failed = asyncio.Event()  # a healthy socket saw something it should not

    def fail(self, message: str) -> None:
        self.errors.append(message)
        self.failed.set()

    async def wait(self, seq: int, timeout: float) -> None:
        """Until every healthy socket has ``seq``; fails at once if one of them failed."""
        done = asyncio.ensure_future(self.complete[seq].wait())
        failed = asyncio.ensure_future(self.failed.wait())
        try:
            await asyncio.wait((done, failed), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
            failed.cancel()
        assert not self.errors, self.errors[:5]
        assert self.complete[seq].is_set(), f"seq {seq} did not reach every healthy socket in {timeout} s"

    def expect(self, seq: int) -> None:
        self.arrivals[seq] = []
        self.complete[seq] = asyncio.Event()

    async def read(self, index: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            now = time.monotonic()
            if msg.type != aiohttp.WSMsgType.TEXT:
                self.fail(f"socket {index}: {msg.type} {msg.data!r}")
                return
            event = orjson.loads(msg.data)
            if event.get("type") in ("pong", "presence", "presence_sync"):
                continue
            seq = event["seq"]
            self.seqs[index].append(seq)
            arrivals = self.arrivals.get(seq)
            if arrivals is None:
                self.fail(f"socket {index}: unexpected seq {seq}")
                return
            arrivals.append(now)
            if len(arrivals) == self.count:
                self.complete[seq].set()
        self.fail(f"socket {index} closed: {ws.close_code}")


async def connect_healthy(
    http: aiohttp.ClientSession, srv: ServerProcess, draft: str, since: int, n: int
) -> list[aiohttp.ClientWebSocketResponse]:
    async def one() -> aiohttp.ClientWebSocketResponse:
        ws = await http.ws_connect(
            f"{srv.ws_url}/v1/ws/drafts/{draft}?since={since}", headers={"X-User-Id": USER}
        )
        assert (await receive_json(ws))["type"] == "connected"
        return ws

    out: list[aiohttp.ClientWebSocketResponse] = []
    for start in range(0, n, 50):
        out.extend(await asyncio.gather(*(one() for _ in range(min(50, n - start)))))
    return out


async def slow_closes(api: Api) -> int:
    _, body, _ = await api.call("GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith("ringlog_ws_slow_closes_total "):
            return int(float(line.split()[1]))
    raise AssertionError("no ringlog_ws_slow_closes_total")


async def drain_stuck(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[list[int], int]:
    """Read what a stuck socket had buffered: (event seqs, close code); answer the close."""
    seqs: list[int] = []
    connected = False
    for _ in range(MAX_APPENDS + 10):
        opcode, payload = await read_frame(reader)
        if opcode == 0x1:
            message: dict[str, Any] = orjson.loads(payload)
            if message["type"] == "connected":
                assert not connected and not seqs, "connected comes first, once"
                connected = True
            elif message["type"] in ("presence_sync", "presence"):
                assert connected, "presence_sync follows connected"
            else:
                seqs.append(message["seq"])
        elif opcode == 0x8:
            (code,) = struct.unpack("!H", payload[:2])
            # a masked close reply (zero mask key) completes the handshake
            writer.write(bytes([0x88, 0x82]) + b"\0\0\0\0" + payload[:2])
            await writer.drain()
            writer.close()
            assert connected
            return seqs, code
    raise AssertionError("no close frame")


async def run(
    api: Api,
    http: aiohttp.ClientSession,
    srv: ServerProcess,
    n_stuck: int,
    n_appends: int | None,
) -> dict[str, Any]:
    """One run on a fresh draft; returns its figures. ``n_appends`` None: until all stuck close."""
    draft = (await api.create(USER))["id"]
    head = 1
    stuck = [await raw_websocket(srv, f"/v1/ws/drafts/{draft}?since={head}", USER) for _ in range(n_stuck)]
    sockets = await connect_healthy(http, srv, draft, head, SOCKETS - STUCK)
    healthy = Healthy(len(sockets))
    readers = [asyncio.create_task(healthy.read(i, ws)) for i, ws in enumerate(sockets)]
    closes_before = await slow_closes(api)
    rss_before = rss(srv.proc.pid)  # type: ignore[union-attr]
    rss_peak = rss_before
    cpu_server, cpu_self, started = cpu_seconds(srv.proc.pid), time.process_time(), time.monotonic()  # type: ignore[union-attr]
    latencies: list[float] = []
    closed_at: int | None = None
    try:
        for i in range(MAX_APPENDS):
            seq = head + 1
            healthy.expect(seq)
            sent = time.monotonic()
            status, body, _ = await api.segment(draft, USER, CONTENT)
            assert status == 201, body
            assert body["data"]["seq"] == seq
            head = seq
            await healthy.wait(seq, 30)
            if i >= WARMUP:
                latencies.extend(t - sent for t in healthy.arrivals[seq])
            rss_peak = max(rss_peak, rss(srv.proc.pid))  # type: ignore[union-attr]
            if n_appends is not None:
                if i + 1 >= n_appends:
                    break
            elif closed_at is None and i % 5 == 4 and await slow_closes(api) - closes_before >= n_stuck:
                closed_at = i + 1
            elif closed_at is not None and i + 1 >= closed_at + APPENDS_AFTER_CLOSE:
                break
        assert n_appends is not None or closed_at is not None, "the stuck sockets were never all closed"
        assert not healthy.errors, healthy.errors[:5]
        assert await slow_closes(api) - closes_before == n_stuck, "only the stuck sockets are closed"
        cpu = (
            cpu_seconds(srv.proc.pid) - cpu_server,  # type: ignore[union-attr]
            time.process_time() - cpu_self,
            time.monotonic() - started,
        )
        # the stuck clients now read (within the server's 5 s close timeout), then resume
        drained = await asyncio.gather(*(drain_stuck(r, w) for r, w in stuck))
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    for ws in sockets:
        await ws.close()
    expected = list(range(2, head + 1))
    for index, seqs in enumerate(healthy.seqs):
        assert seqs == expected, f"healthy socket {index}: not every event in order"
    resumed = 0
    for seqs, code in drained:
        assert code == 1013
        assert seqs == list(range(2, 2 + len(seqs))), "stuck frames in order, no gap"
        last = seqs[-1] if seqs else 1
        assert last < head
        async with http.ws_connect(
            f"{srv.ws_url}/v1/ws/drafts/{draft}?since={last}", headers={"X-User-Id": USER}
        ) as ws:
            assert (await receive_json(ws))["head_seq"] == head
            rest = [(await receive_json(ws))["seq"] for _ in range(head - last)]
            assert rest == list(range(last + 1, head + 1))
            await ws.send_json({"type": "ping"})
            assert (await receive_json(ws))["type"] == "pong", "nothing after the head"
        resumed += head - last
    return {
        "appends": head - 1,
        "p50": sorted(latencies)[len(latencies) // 2],
        "p99": p99(latencies),
        "rss_before": rss_before,
        "rss_peak": rss_peak,
        "stuck_frames_read": [len(s) for s, _ in drained],
        "resumed_events": resumed,
        "cpu_server_test_wall_s": tuple(round(c, 1) for c in cpu),
    }


async def test_stuck_clients_do_not_slow_the_others(tmp_path: Path) -> None:
    args = ["--dev-auth", "--rate-limit", "0", "--max-sockets-per-user", "0", "--ws-queue-size", str(QUEUE)]
    with ServerProcess(str(tmp_path / "stuck.db"), *args, log_path=tmp_path / "server.log") as srv:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=TIMEOUT, connector=connector) as http:
            api = Api(srv, http)
            baseline = await run(api, http, srv, 0, BASELINE_APPENDS)
            stuck = await run(api, http, srv, STUCK, None)
        assert srv.stop() == 0
    summary = {
        "sockets": SOCKETS,
        "stuck": STUCK,
        "appends": stuck["appends"],
        "baseline_p50_ms": round(baseline["p50"] * 1000, 1),
        "baseline_p99_ms": round(baseline["p99"] * 1000, 1),
        "stuck_p50_ms": round(stuck["p50"] * 1000, 1),
        "stuck_p99_ms": round(stuck["p99"] * 1000, 1),
        "rss_growth_mib": round((stuck["rss_peak"] - stuck["rss_before"]) / 2**20, 1),
        "stuck_frames_read": (min(stuck["stuck_frames_read"]), max(stuck["stuck_frames_read"])),
        "resumed_events": stuck["resumed_events"],
        "cpu_server_test_wall_s": (baseline["cpu_server_test_wall_s"], stuck["cpu_server_test_wall_s"]),
    }
    print(summary)
    # what bounded queues can hold: a transport buffer up to HIGH_WATER plus one write, and
    # QUEUE events, per stuck socket; 24 MiB for everything else (parsing, allocator pools)
    frame = len(CONTENT) + 400
    bound = STUCK * (HIGH_WATER + (QUEUE + 1) * frame) + 24 * 2**20
    assert stuck["rss_peak"] - stuck["rss_before"] < bound, summary
