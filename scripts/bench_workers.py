"""The multi-process section of ``scripts/bench.py`` (issue 11; not part of ringlog).

* HTTP appends/s through ``ringlog serve --workers 1`` and ``--workers 2`` on one SQLite file,
  each beside the other in the same run (same load generator, same 64 connections);
* fan-out server CPU per delivery with 1 and 2 workers (CPU summed over the supervisor and
  every worker, from ``/proc``);
* cross-worker delivery: appends through a connection pinned to worker A, received by sockets
  on worker A (same worker) and on worker B (cross-worker); p50 / p99 of each.

Which process answered is read from the ``X-Ringlog-Worker`` response header.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import benchlib as bl
import orjson


class WorkersServer(bl.Server):
    """``ringlog serve --workers N``; its CPU time is the supervisor's plus every worker's."""

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in [self.pid, *_children(self.pid)]:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / bl.CLK_TCK
        return total


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def workers_server(db: str, workers: int) -> WorkersServer:
    base = bl.ringlog_server(db, f"ringlog-w{workers}", "--workers", str(workers))
    return WorkersServer(base.name, base.cmd)


async def http_appends(db: str, workers: int, seconds: float, reps: int) -> bl.HttpFigures:
    figures = bl.HttpFigures()
    server = workers_server(db, workers)
    try:
        server.start()
        targets = await bl.ringlog_targets([server.url], 64)
        await bl.http_appends(
            [server.url], targets, connections=64, seconds=seconds, reps=reps, figures=figures
        )
    finally:
        server.__exit__()
    return figures


async def fanout(db: str, workers: int, plan: bl.FanoutPlan) -> bl.FanoutFigures:
    server = workers_server(db, workers)
    try:
        server.start()
        async with aiohttp.ClientSession() as session:
            draft = await bl.create_draft(session, server.url)
        async with bl.Fleet(
            [f"{server.ws_base}/v1/ws/drafts/{draft}?user_id={bl.OWNER}"], plan.sockets, plan.procs
        ) as fleet:
            return await bl.fanout(
                server,
                fleet,
                [f"{server.url}/v1/collab/drafts/{draft}/segments"],
                headers=bl.owner_headers(),
                steady_rate=plan.steady_rate,
                steady_seconds=plan.steady_seconds,
                burst=plan.burst,
                reps=plan.reps,
                figures=bl.FanoutFigures(),
            )
    finally:
        server.__exit__()


async def cross_worker_latency(
    db: str, appends: int, rate: float, sockets: int = 16
) -> dict[str, list[float]]:
    """Latency (ms) from POST sent to event received, by whether the socket is on the POST's worker."""
    server = workers_server(db, 2)
    out: dict[str, list[float]] = {"same": [], "cross": []}
    try:
        server.start()
        async with aiohttp.ClientSession() as setup:
            draft = await bl.create_draft(setup, server.url)
        # one keep-alive connection per worker for the appends
        posters: dict[str, aiohttp.ClientSession] = {}
        for _ in range(50):
            if len(posters) == 2:
                break
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
            async with session.get(f"{server.url}/healthz") as r:
                worker = r.headers["X-Ringlog-Worker"]
            if worker in posters:
                await session.close()
            else:
                posters[worker] = session
        if len(posters) < 2:
            raise RuntimeError("could not reach both workers")
        received: list[tuple[str, float, str]] = []  # (socket's worker, latency s, content)
        ws_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        sockets_by_worker: dict[str, int] = {}
        readers = []

        async def read(ws: aiohttp.ClientWebSocketResponse, worker: str) -> None:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return
                event = orjson.loads(msg.data)
                content = event.get("data", {}).get("segment", {}).get("content", "")
                if content.startswith("@"):
                    sent = float(content.split("@")[1])
                    received.append((worker, time.time() - sent, content))

        try:
            for _ in range(sockets * 4):
                if len(readers) >= sockets:
                    break
                ws = await ws_session.ws_connect(
                    f"{server.ws_base}/v1/ws/drafts/{draft}?user_id={bl.OWNER}&since=1"
                )
                worker = ws._response.headers["X-Ringlog-Worker"]
                if sockets_by_worker.get(worker, 0) >= sockets // 2:
                    await ws.close()
                    continue
                sockets_by_worker[worker] = sockets_by_worker.get(worker, 0) + 1
                await ws.receive()  # "connected"
                readers.append(asyncio.create_task(read(ws, worker)))
            order = sorted(posters)
            sent_by: dict[str, str] = {}
            start = time.monotonic()
            for i in range(appends):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                worker = order[i % 2]
                body = bl.stamped_content()
                sent_by[orjson.loads(body)["content"]] = worker
                async with posters[worker].post(
                    f"{server.url}/v1/collab/drafts/{draft}/segments", data=body, headers=bl.owner_headers()
                ) as r:
                    if r.status != 201:
                        raise RuntimeError(f"append: {r.status} {await r.text()}")
            deadline = time.monotonic() + 30
            while len(received) < appends * len(readers) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            for task in readers:
                task.cancel()
            await ws_session.close()
            for session in posters.values():
                await session.close()
        for socket_worker, latency, content in received:
            kind = "same" if sent_by.get(content) == socket_worker else "cross"
            out[kind].append(latency * 1000)
        out["expected"] = [float(appends * len(readers))]
    finally:
        server.__exit__()
    return out


async def section(tmp: Path, seconds: float, reps: int, quick: bool) -> str:
    """The Markdown section "## 7. More than one process"."""
    rows: list[tuple[str, bl.HttpFigures]] = []
    for workers in (1, 2):
        rows.append(
            (
                f"ringlog, SQLite, --workers {workers}",
                await http_appends(str(tmp / f"w{workers}.db"), workers, seconds, reps),
            )
        )
    plan = bl.FanoutPlan(500 if quick else 1000, 2, 20.0, seconds, 30 if quick else 100, reps)
    fan: list[tuple[str, bl.FanoutFigures, float]] = []
    for workers in (1, 2):
        fan.append(
            (
                f"ringlog, SQLite, --workers {workers}",
                await fanout(str(tmp / f"fw{workers}.db"), workers, plan),
                float("nan"),
            )
        )
    lat = await cross_worker_latency(str(tmp / "lat.db"), 100 if quick else 300, 50.0)
    same, cross = lat["same"], lat["cross"]
    expected = int(lat["expected"][0])
    base = rows[0][1].rate.median
    lines = [
        "## 7. More than one process",
        "",
        f"`ringlog serve --workers N` on one SQLite file (synchronous=FULL), {bl.LOAD_GENERATOR}, 64 connections, "
        f"{seconds:g} s per rep. The load generator and the socket client processes run on the same 2 cores "
        "as the server: with 2 workers the server can use both cores only while the clients are idle, so "
        "the 2-worker figures are bounded by the clients (client-bound), not by the design.",
        "",
        bl_http_rows(rows),
        "",
        f"2 workers vs 1: **{bl.ratio(rows[1][1].rate.median, base)}** appends/s.",
        "",
        f"Fan-out, {plan.sockets:,} sockets on one draft (the kernel spreads them over the workers), paced "
        f"20 appends/s then bursts of {plan.burst}; server CPU is the supervisor's plus every worker's:",
        "",
        *bl.fanout_rows(fan, fan[0][1]),
        "",
        f"Cross-worker delivery, `--workers 2`, 16 sockets (8 per worker), {len(same) + len(cross):,} of "
        f"{expected:,} deliveries received; appends paced at 50/s through one keep-alive connection per worker, "
        "in turn:",
        "",
        "| delivery | n | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        f"| same worker (append and socket on one process) | {len(same)} | {bl.pct(same, 50):.2f} | {bl.pct(same, 99):.2f} |",
        f"| cross worker (commit discovery: datagram wake-up + log read) | {len(cross)} | {bl.pct(cross, 50):.2f} | {bl.pct(cross, 99):.2f} |",
        "",
        f"Cross / same p99: **{bl.pct(cross, 99) / max(1e-9, bl.pct(same, 99)):.2f}×** (target ≤ 2×).",
        "",
    ]
    return "\n".join(lines)


def bl_http_rows(rows: Sequence[tuple[str, bl.HttpFigures]]) -> str:
    out = [
        "| server | appends/s min / median / max | vs 1 worker | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|",
    ]
    base = rows[0][1].rate.median
    for label, f in rows:
        out.append(
            f"| {label} | {f.rate.cells(sep=' / ')} | {bl.ratio(f.rate.median, base)} "
            f"| {f.p50.median:.1f} | {f.p99.median:.1f} | {f.errors} |"
        )
    return "\n".join(out)
