"""Soak: many sockets, steady appends and reconnect churn for a long time; nothing grows, nothing lost.

    python scripts/soak.py [--seconds 600] [--sockets 1000] [--drafts 20] [--rate 50] [--churn 20]
                           [--stuck 0] [--db PATH]

``--rate`` appends per second in total, ``--churn`` sockets per second closed and resumed with
``since`` = their last seq, ``--stuck`` sockets that never read (the server must close them with
1013; they resume afterwards). Samples the server's RSS and open file descriptors every 5 s and
reports their slope (least squares, per minute) over the second half of the run. At the end every
socket must hold exactly seqs 1..head of its draft: zero gaps, zero duplicates. Prints a JSON
summary; exits 1 on a gap, a duplicate or a socket that did not catch up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.serverproc import ServerProcess  # noqa: E402

USER = "soak"


@dataclass
class Sock:
    draft_id: str
    last_seq: int = 0
    count: int = 0
    errors: int = 0
    reconnects: int = 0
    slow_closes: int = 0


def proc_stats(pid: int) -> tuple[int, int]:
    """(RSS bytes, open fds) of a process, from /proc."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    return rss, fds


def _pause_reading(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Stop reading from the TCP socket (aiohttp's client would otherwise buffer without limit)."""
    transport = ws._writer.transport
    transport.pause_reading()


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    return 60 * sum((t - mt) * (v - mv) for t, v in samples) / var if var else 0.0


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="ringlog-soak-"))
    db = args.db or str(workdir / "soak.db")
    srv = ServerProcess(db, "--dev-auth", "--rate-limit", "0", "--max-sockets-per-user", "0",
                        "--ws-queue-size", str(args.queue), log_path=workdir / "server.log")  # fmt: skip
    srv.start(timeout=60)
    assert srv.proc is not None
    pid = srv.proc.pid
    rng = random.Random(args.seed)
    violations: list[str] = []
    connector = aiohttp.TCPConnector(limit=0)
    samples: list[tuple[float, int, int]] = []
    appended = 0
    try:
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=60)
        ) as http:
            drafts = []
            for i in range(args.drafts):
                async with http.post(f"{srv.url}/v1/collab/drafts", json={"title": f"soak {i}"},
                                     headers={"X-User-Id": USER}) as r:  # fmt: skip
                    drafts.append((await r.json())["data"]["id"])
            socks = [Sock(drafts[i % len(drafts)]) for i in range(args.sockets)]
            stuck = set(rng.sample(range(args.sockets), args.stuck))
            stop = asyncio.Event()
            kick: dict[int, asyncio.Event] = {i: asyncio.Event() for i in range(args.sockets)}

            async def reader(i: int) -> None:
                s = socks[i]
                for _ in range(1_000_000):
                    if stop.is_set():
                        return
                    url = f"{srv.ws_url}/v1/ws/drafts/{s.draft_id}?since={s.last_seq}&user_id={USER}"
                    try:
                        async with http.ws_connect(url, max_msg_size=0) as ws:
                            if i in stuck:  # never read: let the server's backlog for it overflow
                                _pause_reading(ws)
                                with contextlib.suppress(TimeoutError):
                                    await asyncio.wait_for(stop.wait(), args.stuck_for)
                                stuck.discard(i)
                            kick[i].clear()
                            kicked = asyncio.ensure_future(kick[i].wait())
                            stopped = asyncio.ensure_future(stop.wait())
                            try:
                                while True:
                                    receive = asyncio.ensure_future(ws.receive())
                                    await asyncio.wait(
                                        (receive, kicked, stopped), return_when=asyncio.FIRST_COMPLETED
                                    )
                                    if not receive.done():
                                        receive.cancel()
                                        break
                                    msg = receive.result()
                                    if msg.type != aiohttp.WSMsgType.TEXT:
                                        if ws.close_code == 1013:
                                            s.slow_closes += 1
                                        break
                                    event = orjson.loads(msg.data)
                                    if "seq" not in event:
                                        continue
                                    if event["seq"] != s.last_seq + 1:
                                        violations.append(
                                            f"socket {i}: seq {event['seq']} after {s.last_seq}"
                                        )
                                        return
                                    s.last_seq = event["seq"]
                                    s.count += 1
                            finally:
                                kicked.cancel()
                                stopped.cancel()
                    except (aiohttp.ClientError, TimeoutError):
                        s.errors += 1
                        await asyncio.sleep(0.2)
                    s.reconnects += 1

            async def writer() -> None:
                nonlocal appended
                interval = 1.0 / args.rate
                next_at = time.monotonic()
                while not stop.is_set():
                    d = rng.choice(drafts)
                    async with http.post(f"{srv.url}/v1/collab/drafts/{d}/segments",
                                         json={"content": "soak " + "x" * 100}, headers={"X-User-Id": USER}) as r:  # fmt: skip
                        if r.status == 201:
                            appended += 1
                    next_at += interval
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))

            async def churn() -> None:
                while not stop.is_set():
                    for i in rng.sample(range(args.sockets), min(args.churn, args.sockets)):
                        kick[i].set()
                    await asyncio.sleep(1)

            tasks = [asyncio.ensure_future(reader(i)) for i in range(args.sockets)]
            tasks += [asyncio.ensure_future(writer()), asyncio.ensure_future(churn())]
            started = time.monotonic()
            while time.monotonic() - started < args.seconds:
                await asyncio.sleep(5)
                rss, fds = proc_stats(pid)
                samples.append((time.monotonic() - started, rss, fds))
                if args.verbose:
                    print(
                        f"t={samples[-1][0]:.0f}s rss={rss / 2**20:.1f}MiB fds={fds} appended={appended}",
                        flush=True,
                    )
            stop.set()
            await asyncio.wait(tasks, timeout=60)
            # drain: every socket catches up to its draft's head through a final resume
            heads: dict[str, int] = {}
            for d in drafts:
                async with http.get(f"{srv.url}/v1/collab/drafts/{d}", headers={"X-User-Id": USER}) as r:
                    heads[d] = (await r.json())["data"]["seq"]
            behind = [i for i, s in enumerate(socks) if s.last_seq != heads[s.draft_id]]
            for i in behind[:200]:
                s = socks[i]
                url = f"{srv.ws_url}/v1/ws/drafts/{s.draft_id}?since={s.last_seq}&user_id={USER}"
                async with http.ws_connect(url) as ws:
                    while s.last_seq < heads[s.draft_id]:
                        event = orjson.loads((await ws.receive(timeout=10)).data)
                        if "seq" in event:
                            if event["seq"] != s.last_seq + 1:
                                violations.append(f"socket {i} resume: seq {event['seq']} after {s.last_seq}")
                                break
                            s.last_seq = event["seq"]
            not_caught_up = [i for i, s in enumerate(socks) if s.last_seq != heads[s.draft_id]]
            if not_caught_up:
                violations.append(f"{len(not_caught_up)} sockets did not reach their draft's head")
    finally:
        srv.stop(60)
    half = [s for s in samples if s[0] >= args.seconds / 2]
    return {
        "seconds": args.seconds,
        "sockets": args.sockets,
        "stuck": args.stuck,
        "appended": appended,
        "delivered": sum(s.count for s in socks),
        "reconnects": sum(s.reconnects for s in socks),
        "slow_closes_1013": sum(s.slow_closes for s in socks),
        "connect_errors": sum(s.errors for s in socks),
        "rss_mib_first_last": [round(samples[0][1] / 2**20, 1), round(samples[-1][1] / 2**20, 1)]
        if samples
        else [],
        "fds_first_last": [samples[0][2], samples[-1][2]] if samples else [],
        "rss_slope_kib_per_min": round(slope_per_minute([(t, r) for t, r, _ in half]) / 1024, 1),
        "fd_slope_per_min": round(slope_per_minute([(t, f) for t, _, f in half]), 2),
        "violations": violations[:10],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--drafts", type=int, default=20)
    parser.add_argument("--rate", type=float, default=50, help="appends per second")
    parser.add_argument("--churn", type=int, default=20, help="sockets resumed per second")
    parser.add_argument("--stuck", type=int, default=0, help="sockets that never read for --stuck-for s")
    parser.add_argument("--stuck-for", type=float, default=30)
    parser.add_argument("--queue", type=int, default=256, help="the server's --ws-queue-size")
    parser.add_argument("--db", default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.sockets > 1000:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * args.sockets + 1024), hard))
    summary = asyncio.run(run(args))
    print(orjson.dumps(summary).decode(), flush=True)
    return 1 if summary["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
