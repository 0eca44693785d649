"""Benchmark the live API (not a test): N sockets on one draft, appends through HTTP.

Prints, each beside baselines measured in the same run:

* fan-out deliveries/s (burst) and p50/p99 append→receive latency (paced and burst), and server
  RSS per socket — ringlog vs a preserialised raw aiohttp broadcast (the fan-out ceiling);
* HTTP appends/s with ``wrk`` (64 connections, each request with its own Idempotency-Key, one
  draft per client) — ringlog vs a do-nothing aiohttp POST handler (the HTTP ceiling).

Clients run in separate processes (``bench_clients.py``, ``wrk``). Results go to stdout and
to ``docs/BENCHMARKS.md`` under "## Live API (bench_live.py)"; ``scripts/bench.py`` runs the
full set of workloads.

    python scripts/bench_live.py [--sockets 1000] [--reps 3] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as bl

SECTION = "## Live API (bench_live.py)"


async def main(args: argparse.Namespace) -> str:
    bl.raise_nofile()
    tmp = Path(tempfile.mkdtemp(prefix="ringlog-live-"))
    plan = bl.FanoutPlan(
        sockets=args.sockets,
        procs=max(2, args.sockets // 1500),
        steady_rate=20,
        steady_seconds=args.seconds,
        burst=args.burst,
        reps=args.reps,
    )
    print(f"fan-out: {args.sockets} sockets", file=sys.stderr, flush=True)
    raw, raw_rss = await bl.fanout_peer("raw", plan)
    ours, our_rss = await bl.fanout_ringlog(str(tmp / "fanout.db"), plan)

    print("HTTP appends (wrk)", file=sys.stderr, flush=True)
    noop = bl.HttpFigures()
    appends = bl.HttpFigures()
    with bl.peer_server("noop") as server:
        targets = [[(f"/v1/collab/drafts/d{i}/segments", f"u{i}") for i in range(64)]]
        await bl.http_appends(
            [server.url], targets, connections=64, seconds=args.seconds, reps=args.reps, figures=noop
        )
    with bl.ringlog_server(str(tmp / "http.db")) as server:
        targets = await bl.ringlog_targets([server.url], 64)
        await bl.http_appends(
            [server.url], targets, connections=64, seconds=args.seconds, reps=args.reps, figures=appends
        )

    lines = [
        SECTION,
        "",
        f"`python scripts/bench_live.py --sockets {args.sockets}` — {bl.machine_info()}; {args.reps} reps; "
        f"paced: 20 appends/s for {args.seconds:g} s; burst: {args.burst} appends, 16 in flight.",
        "",
        *bl.fanout_rows([("raw broadcast (ceiling)", raw, raw_rss), ("**ringlog**", ours, our_rss)], raw),
        "",
        "| HTTP, 64 connections (wrk) | req/s min | median | max | p50 ms | p99 ms | vs do-nothing | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| do-nothing aiohttp POST (ceiling) | {noop.rate.cells()} | {noop.p50.median:.1f} | {noop.p99.median:.1f} | 1.00× | {noop.errors} |",
        f"| **ringlog appends** (Idempotency-Key each) | {appends.rate.cells()} | {appends.p50.median:.1f} "
        f"| {appends.p99.median:.1f} | {bl.ratio(appends.rate.median, noop.rate.median)} | {appends.errors} |",
    ]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="paced and wrk duration per rep")
    parser.add_argument("--burst", type=int, default=200, help="appends per burst")
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if not bl.have_wrk():
        sys.exit("wrk is needed for the HTTP figures: apt-get install -y wrk")
    section = asyncio.run(main(arguments))
    print(section)
    if not arguments.no_write:
        bl.write_sections(bl.BENCHMARKS_MD, {SECTION: section})
