"""Every ringlog benchmark in one run, each beside its baselines measured in the same run.

    python scripts/bench.py [--quick] [--reps 3] [--no-write] [--only http,fanout,...]

Workloads (issue 7): (1) durable appends through HTTP vs a do-nothing aiohttp handler (wrk);
(2) fan-out at 1,000 and 5,000 sockets vs a raw preserialised broadcast, the spec's reference
hub and python-socketio; (3) catch-up from since=0 vs reading the rows straight from SQLite;
(4) RSS per idle socket and time to accept 10,000 sockets; (5) the store and projections
(``scripts/bench_store.py``); (6) workloads 1 and 2 on PostgreSQL with one and two nodes;
(7) more than one process: ``--workers 1`` vs ``2`` on SQLite, cross-worker delivery
(``scripts/bench_workers.py``); (8) one socket, many drafts: 1,000 ``/v1/ws`` sockets × 10 drafts vs
10,000 per-draft sockets, RSS per subscription and server CPU per delivery, and presence fan-out
cost per member (``scripts/bench_mux.py``). Without ``wrk`` the harness tries ``apt-get install -y wrk``, then
falls back to a Python load generator with the same request mix, and says which it used.

Sizes: ``--quick`` (under 2 minutes on the 2-core machine, with other work running) uses 1 s wrk and
paced runs, 500 sockets, a 30,000-event catch-up, 500 / 1,500 idle sockets and (8) 200 ``/v1/ws``
sockets × 10 drafts vs 2,000 per-draft sockets and 200 presence members; the full run (about
11 minutes) 5 s runs, 1,000 and 5,000 sockets, 100,000 events, 1,000 / 10,000 idle sockets and (8)
1,000 × 10 vs 10,000, 1,000 members.
Both do 3 repetitions of every figure (``--reps``).

Servers, socket clients (``bench_clients.py``) and ``wrk`` are separate processes. Each figure
is min / median / max over ``--reps`` repetitions. The results replace the generated sections of
``docs/BENCHMARKS.md``; hand-written sections (the optimisation log) are kept.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as bl

from eventstore import NewEvent
from eventstore.sqlite import SQLiteStore
from projections.decide import SEGMENT_ID_IS_LOG_POSITION
from projections.event_types import EventType
from projections.runner import rebuild

PG_ADMIN = os.environ.get("RINGLOG_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TS = "2025-12-23T20:30:45.123Z"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- (1) HTTP appends -----------------------------------------------------------------------------


async def http_workload(db: str, seconds: float, reps: int, nodes: int = 1) -> bl.HttpFigures:
    figures = bl.HttpFigures()
    servers = [bl.ringlog_server(db, f"ringlog-{i}") for i in range(nodes)]
    try:
        for s in servers:
            s.start()
        urls = [s.url for s in servers]
        targets = await bl.ringlog_targets(urls, 64)
        await bl.http_appends(urls, targets, connections=64, seconds=seconds, reps=reps, figures=figures)
    finally:
        for s in servers:
            s.__exit__()
    return figures


async def noop_workload(seconds: float, reps: int) -> bl.HttpFigures:
    figures = bl.HttpFigures()
    with bl.peer_server("noop") as server:
        targets = [[(f"/v1/collab/drafts/d{i}/segments", f"u{i}") for i in range(64)]]
        await bl.http_appends(
            [server.url], targets, connections=64, seconds=seconds, reps=reps, figures=figures
        )
    return figures


def http_rows(rows: list[tuple[str, bl.HttpFigures]], ceiling: bl.HttpFigures) -> list[str]:
    out = [
        "| server (64 connections, wrk) | req/s min / median / max | vs do-nothing | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for label, f in rows:
        out.append(
            f"| {label} | {f.rate.cells(sep=' / ')} | {bl.ratio(f.rate.median, ceiling.rate.median)} "
            f"| {f.p50.median:.1f} | {f.p99.median:.1f} | {f.errors} |"
        )
    return out


# -- (3) catch-up ---------------------------------------------------------------------------------


async def build_draft_log(path: Path, events: int) -> str:
    """One draft with ``events`` events (created + segments), written in batches of 1,000, then
    ``ringlog rebuild``'s snapshots and feed index, as a deployment that has run has them: without
    them a fresh server spends its first seconds folding the draft into the feed index and saving
    its first snapshot (the whole draft), on the same core as the catch-ups measured then."""
    store = SQLiteStore(path, synchronous="NORMAL")
    await store.open()
    draft = "draft_" + "ca7c" * 5  # the id form the server accepts (server.service.DRAFT_ID)
    try:
        user = bl.OWNER
        batch: list[NewEvent] = [
            NewEvent(EventType.DRAFT_CREATED, user, TS, {"title": "T", "description": "", "creator_id": user})
        ]
        head = 0
        for position in range(1, events):
            seg = {"id": 0, "author_user_id": user, "content": bl.PAD, "position": position, "created_at": TS}
            batch.append(
                NewEvent(EventType.SEGMENT_ADDED, user, TS, {"segment": seg}, SEGMENT_ID_IS_LOG_POSITION)
            )
            if len(batch) == 1000:
                await store.append(draft, batch, head)
                head += len(batch)
                batch = []
        if batch:
            await store.append(draft, batch, head)
        await rebuild(store)
    finally:
        await store.close()
    return draft


def raw_sqlite_read(path: Path, draft: str) -> float:
    """events/s: plain sqlite3, fetchmany(1000), orjson decode of each body."""
    con = sqlite3.connect(path)
    try:
        started = time.perf_counter()
        cur = con.execute("SELECT body FROM events WHERE draft_id = ? AND seq > 0 ORDER BY seq", (draft,))
        n = 0
        while rows := cur.fetchmany(1000):
            for (body,) in rows:
                orjson.loads(body)
                n += 1
        return n / (time.perf_counter() - started)
    finally:
        con.close()


async def catchup_client(url: str, expect: int, mode: str = "catchup") -> float:
    """events/s received by a ``bench_clients.py`` process: ``catchup`` (aiohttp, orjson-decodes every
    event) or ``catchup-raw`` (raw socket, frame headers and a bytes search for each seq)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(bl.SCRIPTS / "bench_clients.py"), mode, "--url", url, "--expect", str(expect),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 300)
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"catch-up client ({mode}) failed with exit status {proc.returncode}")
    result = orjson.loads(out.strip().splitlines()[-1])
    if result["events"] < expect:
        raise RuntimeError(f"catch-up ({mode}) received {result['events']} of {expect}")
    return float(result["events"] / result["seconds"])


CATCHUP_ROWS = ("sqlite", "raw-dump", "raw-ringlog", "raw-ringlog-cold", "dec-dump", "dec-ringlog")


async def catchup_workload(tmp: Path, events: int, reps: int) -> dict[str, bl.Series]:
    """Every server up at once and the reps taken in turn, so that each ratio compares figures
    taken moments apart (the machine's load moves several-fold within a minute)."""
    path = tmp / "catchup.db"
    draft = await build_draft_log(path, events)
    cold_path = tmp / "catchup-cold.db"  # its own copy: two servers on one file would share it
    shutil.copyfile(path, cold_path)
    out = {name: bl.Series() for name in CATCHUP_ROWS}
    for _ in range(reps):
        out["sqlite"].add(raw_sqlite_read(path, draft))
    ws = f"/v1/ws/drafts/{draft}?user_id={bl.OWNER}&since=0"
    with (
        bl.peer_server("raw") as raw,
        bl.ringlog_server(str(path)) as server,
        # no kept pages: every catch-up reads and frames every event (the first socket to replay a history)
        bl.ringlog_server(str(cold_path), "ringlog-cold", "--catch-up-cache-bytes", "0") as cold,
    ):
        dump, ours, ours_cold = (
            f"{raw.ws_base}/dump?n={events}",
            f"{server.ws_base}{ws}",
            f"{cold.ws_base}{ws}",
        )
        # warm-ups: the dump server frames the events once, the projectors fold the draft once
        for url in (dump, ours, ours_cold):
            await catchup_client(url, events, "catchup-raw")
        for _ in range(reps):
            out["raw-dump"].add(await catchup_client(dump, events, "catchup-raw"))
            out["raw-ringlog"].add(await catchup_client(ours, events, "catchup-raw"))
            out["raw-ringlog-cold"].add(await catchup_client(ours_cold, events, "catchup-raw"))
            out["dec-dump"].add(await catchup_client(dump, events))
            out["dec-ringlog"].add(await catchup_client(ours, events))
    return out


def catchup_section(n: int, cu: dict[str, bl.Series]) -> str:
    sq = cu["sqlite"].median

    def row(label: str, key: str, *others: str) -> str:
        vs = " | ".join(bl.ratio(cu[key].median, cu[o].median) if o else "–" for o in others)
        return f"| {label} | {cu[key].cells(sep=' / ')} | {vs} |"

    return "\n".join(
        [
            "## 3. Catch-up",
            "",
            f"One draft of {n:,} events (~330 bytes each); a client in its own process connects with `since=0` "
            "and receives every event; events/s from the start of the connection to the last event. Two clients:",
            "",
            "* **counting client** (`bench_clients.py catchup-raw`): a blocking socket that parses WebSocket "
            "frame headers, takes each event's `seq` with a bytes search and checks it is exactly the next "
            "one (contiguity), and fully orjson-decodes one event in 1,000 plus the last one to check the "
            "search against the JSON. About 1 µs of client CPU per event, so the *server* is measured: "
            "this is the figure the target compares;",
            "* **decoding client** (`bench_clients.py catchup`): aiohttp's WebSocket client, orjson-decoding "
            "every event as an application would. It saturates its core at ~250–400k events/s (the row on the dump server), so "
            "with it the client, not the server, is the limit.",
            "",
            "The dump server's events are byte for byte those of ringlog's log. After a warm-up connection, both "
            "servers write kept frames: the dump server its prebuilt pages, ringlog the full pages of 1,000 events "
            "that the warm-up read and framed (`--catch-up-cache-bytes`); the *pages not kept* row is the first "
            "socket to replay a history, every event read from SQLite and framed.",
            "",
            "| what | events/s min / median / max | vs SQLite read+decode | vs the same client on the dump server |",
            "|---|---|---:|---:|",
            row(
                "plain sqlite3 `fetchmany(1000)` + orjson decode of every row (the store's ceiling)",
                "sqlite",
                "sqlite",
                "",
            ),
            row(
                "counting client ← raw aiohttp server writing preframed events, 1,000 per write (the socket's ceiling)",
                "raw-dump",
                "sqlite",
                "raw-dump",
            ),
            row(
                "**ringlog catch-up ← counting client** (the target's figure)",
                "raw-ringlog",
                "sqlite",
                "raw-dump",
            ),
            row(
                "ringlog catch-up ← counting client, pages not kept (`--catch-up-cache-bytes 0`)",
                "raw-ringlog-cold",
                "sqlite",
                "raw-dump",
            ),
            row(
                "decoding client ← raw aiohttp server, preframed events (the decoding client's ceiling)",
                "dec-dump",
                "sqlite",
                "dec-dump",
            ),
            row("ringlog catch-up ← decoding client", "dec-ringlog", "sqlite", "dec-dump"),
            "",
            f"Target (≥ 0.5× SQLite read+decode): **{cu['raw-ringlog'].median / sq:.2f}×** received by the counting "
            f"client; {cu['dec-ringlog'].median / sq:.2f}× when the client also decodes every event (client-bound).",
            "",
        ]
    )


# -- (4) connections ------------------------------------------------------------------------------


async def idle_sockets(kind: str, db: str, n: int) -> tuple[float, float, int]:
    """(KiB RSS per idle socket, seconds to accept all, sockets connected)."""
    procs = max(1, n // 2500)
    server = bl.ringlog_server(db) if kind == "ringlog" else bl.peer_server("raw")
    with server:
        if kind == "ringlog":
            import aiohttp

            async with aiohttp.ClientSession() as session:
                draft = await bl.create_draft(session, server.url)
            url = f"{server.ws_base}/v1/ws/drafts/{draft}?user_id={bl.OWNER}"
            # warm-up: one socket, so imports and first-use allocations are not counted per socket
            async with bl.Fleet([url], 10, 1):
                pass
        else:
            url = f"{server.ws_base}/ws"
            async with bl.Fleet([url], 10, 1):
                pass
        await asyncio.sleep(0.5)
        rss0 = server.rss_kib()
        async with bl.Fleet([url], n, procs, concurrency=250) as fleet:
            await asyncio.sleep(1.0)
            rss = (server.rss_kib() - rss0) / max(1, fleet.connected)
            return rss, fleet.connect_seconds, fleet.connected


# -- (5) store and projections --------------------------------------------------------------------


async def store_workload(quick: bool, reps: int) -> str:
    out = Path(tempfile.mkdtemp(prefix="ringlog-benchstore-")) / "BENCHMARKS.md"
    args = [sys.executable, str(bl.SCRIPTS / "bench_store.py"), "--reps", str(reps), "--out", str(out)]
    proc = await asyncio.create_subprocess_exec(
        *args, *(["--quick"] if quick else []), stdout=asyncio.subprocess.DEVNULL
    )
    await asyncio.wait_for(proc.wait(), 900)
    section = bl.read_section(out, "## Store and projections")
    if proc.returncode != 0 or section is None:
        return (
            "## Store and projections\n\n`scripts/bench_store.py` failed in this run (exit status "
            + f"{proc.returncode}).\n"
        )
    return section + "\n"


# -- (6) PostgreSQL -------------------------------------------------------------------------------


async def pg_database() -> tuple[str, str] | None:
    try:
        import asyncpg

        admin = await asyncpg.connect(PG_ADMIN, timeout=3)
    except Exception as e:
        log(f"PostgreSQL not reachable at {PG_ADMIN}: {e}; skipping")
        return None
    name = "ringlog_bench_" + uuid.uuid4().hex[:10]
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name, PG_ADMIN.rsplit("/", 1)[0] + "/" + name


async def pg_drop(name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(PG_ADMIN, timeout=3)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


# -- (6) PostgreSQL nodes: appends/s with 1 and 2 nodes, side by side ---------------------------


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc (seconds)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu() -> dict[int, float]:
    """CPU seconds of every process named ``postgres`` on this machine (the database server), by pid."""
    out: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            out[int(entry)] = _cpu_seconds(int(entry))
        except (OSError, IndexError, ValueError):
            continue  # a process that ended meanwhile
    return out


def _postgres_cpu_since(before: dict[int, float]) -> float:
    """PostgreSQL CPU seconds since ``before`` (backends that exited meanwhile are not counted)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in _postgres_cpu().items())


def _load_cpu() -> float:
    """CPU seconds of the load generator: this process (the Python generator runs here) plus its
    reaped children (wrk; the servers are not reaped until they stop)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class NodesRun:
    """One measurement of ``nodes`` ringlog nodes on a fresh PostgreSQL database."""

    nodes: int
    rate: float
    p99_ms: float
    errors: int
    server_cores: float
    postgres_cores: float
    load_cores: float
    load_average: float
    """The machine's 1-minute load average at the end (other work on it shows here)."""


async def pg_nodes_run(nodes: int, seconds: float) -> NodesRun:
    """Start ``nodes`` servers on a fresh database, wrk them (64 connections split between them)."""
    db = await pg_database()
    assert db is not None
    name, url = db
    servers = [bl.ringlog_server(url, f"ringlog-pg-{i}") for i in range(nodes)]
    try:
        for s in servers:
            s.start()
        urls = [s.url for s in servers]
        targets = await bl.ringlog_targets(urls, 64)
        figures = bl.HttpFigures()
        await bl.http_appends(
            urls, targets, connections=64, seconds=1.0, reps=1, figures=bl.HttpFigures()
        )  # warm-up
        server0 = [_cpu_seconds(s.pid) for s in servers]
        pg0, load0, t0 = (
            _postgres_cpu(),
            _load_cpu(),
            time.monotonic(),
        )
        await bl.http_appends(urls, targets, connections=64, seconds=seconds, reps=1, figures=figures)
        elapsed = time.monotonic() - t0
        load1 = _load_cpu()
        server_cpu = sum(_cpu_seconds(s.pid) - c for s, c in zip(servers, server0, strict=True))
        pg_cpu = _postgres_cpu_since(pg0)
        load_cpu = load1 - load0
        return NodesRun(
            nodes,
            figures.rate.values[0],
            figures.p99.values[0],
            figures.errors,
            server_cpu / elapsed,
            pg_cpu / elapsed,
            load_cpu / elapsed,
            os.getloadavg()[0],
        )
    finally:
        for s in servers:
            s.__exit__()
        await pg_drop(name)


async def pg_nodes_section(seconds: float, rounds: int) -> list[str]:
    """HTTP appends/s and p99 with 1 and 2 PostgreSQL nodes, interleaved 1, 2, 1, 2, … so that
    each 2-node figure stands beside a 1-node baseline measured moments before it (this machine's
    load from other work drifts over minutes)."""
    pairs: list[tuple[NodesRun, NodesRun]] = []
    for r in range(rounds):
        log(f"(6) PostgreSQL nodes, round {r + 1}/{rounds}")
        one = await pg_nodes_run(1, seconds)
        two = await pg_nodes_run(2, seconds)
        pairs.append((one, two))

    def cells(run: NodesRun) -> str:
        per = 1e6 / run.rate if run.rate else float("nan")
        return (
            f"{run.rate:,.0f} | {run.p99_ms:.0f} | {run.server_cores:.2f} | {run.postgres_cores:.2f} | "
            f"{run.load_cores:.2f} | {run.server_cores * per:.0f} / {run.postgres_cores * per:.0f} | "
            f"{run.load_average:.1f}"
        )

    lines = [
        "| round | nodes | appends/s | p99 ms | ringlog cores | PostgreSQL cores | load generator cores "
        "| CPU µs per append (ringlog / PostgreSQL) | load average | 2 nodes ÷ 1 node |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios: list[float] = []
    for i, (one, two) in enumerate(pairs, start=1):
        ratio = two.rate / one.rate if one.rate else float("nan")
        ratios.append(ratio)
        lines.append(f"| {i} | 1 | {cells(one)} | |")
        lines.append(f"| {i} | 2 | {cells(two)} | **{ratio:.2f}×** |")
    errors = sum(a.errors + b.errors for a, b in pairs)
    lines += [
        "",
        f"2 nodes ÷ 1 node, median of {rounds} rounds: **{statistics.median(ratios):.2f}×** "
        f"(min {min(ratios):.2f}×, max {max(ratios):.2f}×); errors: {errors}. Load generator: {bl.LOAD_GENERATOR}, "
        "64 connections split between the nodes. All of it — wrk, the nodes and PostgreSQL — shares "
        "the 2 cores: the cores columns say who took what; when they add up to about 2 the figure is "
        "CPU-bound (client and database included), and when they add up to much less while the load "
        "average is high, other work on the machine took the rest.",
    ]
    return lines


# -- the run --------------------------------------------------------------------------------------


MISSING_EXTRA: list[str] = []
"""Modules of the ``bench`` extra that could not be installed (their rows are skipped)."""


async def main(args: argparse.Namespace) -> dict[str, str]:
    bl.raise_nofile()
    quick, reps = args.quick, args.reps
    only = set(args.only.split(",")) if args.only else None
    tmp = Path(tempfile.mkdtemp(prefix="ringlog-bench-"))
    seconds = 1.0 if quick else 5.0  # wrk and paced fan-out, per rep
    sections: dict[str, str] = {}
    started = time.monotonic()

    def want(name: str) -> bool:
        return only is None or name in only

    sections["## How these figures were made"] = "\n".join(
        [
            "## How these figures were made",
            "",
            f"`python scripts/bench.py{' --quick' if quick else ''}` — {bl.machine_info()}; {reps} reps per figure.",
            "",
            "Servers, socket clients (`scripts/bench_clients.py`, a minimal WebSocket client, several processes) "
            "and `wrk` run in separate processes on the same 2 cores, so the clients take CPU from the "
            "server: where a figure is client-bound it says so. *Server CPU µs per delivery* (from "
            "`/proc/PID/stat` during the burst) is the fan-out capacity figure that the clients do not limit.",
            "",
        ]
    )

    http_noop = http_ours = None
    if want("http"):
        log("(1) HTTP appends")
        http_noop = await noop_workload(seconds, reps)
        http_ours = await http_workload(str(tmp / "http.db"), seconds, reps)
        sections["## 1. Durable appends through HTTP"] = "\n".join(
            [
                "## 1. Durable appends through HTTP",
                "",
                f"`wrk -t2 -c64 -d{seconds:g}s` with a Lua script: 64 writers, each its own draft as ring holder, "
                "`POST …/segments` with a fresh `Idempotency-Key` on every request; SQLite, synchronous=FULL "
                "(every acknowledged append is on disk). wrk shares the 2 cores with the server.",
                "",
                *http_rows(
                    [("do-nothing aiohttp POST (ceiling)", http_noop), ("**ringlog appends**", http_ours)],
                    http_noop,
                ),
                "",
            ]
        )

    # (sockets, client processes, paced appends/s, burst appends); --quick: one socket count, short bursts
    plans = [(500, 2, 20.0, 60)] if quick else [(1000, 2, 20.0, 200), (5000, 4, 10.0, 60)]
    fan_ref: dict[int, bl.FanoutFigures] = {}
    fan_ours: dict[int, bl.FanoutFigures] = {}
    if want("fanout"):
        body = ["## 2. Fan-out", ""]
        body.append(
            "All sockets on one draft; appends are HTTP POSTs from the harness (ringlog: durable appends; "
            "baselines: the same event envelope, not persisted). *Paced*: steady appends for "
            f"{seconds:g} s; *burst*: appends 16 in flight. Latency is append sent → event received "
            "(a send timestamp travels in the segment content). Burst deliveries/s are bounded by the "
            "client processes (they need more CPU per message than the server), so the *server CPU per "
            "delivery* column is the capacity comparison."
        )
        body.append("")
        for sockets, procs, rate, burst in plans:
            plan = bl.FanoutPlan(sockets, procs, rate, seconds, burst, reps)
            results = []
            for kind, label in (
                ("raw", "raw preserialised broadcast (ceiling)"),
                ("spec", "spec's reference hub (send_json loop)"),
                ("socketio", "python-socketio AsyncServer room emit"),
            ):
                if kind in MISSING_EXTRA:
                    log(f"(2) fan-out {sockets}: {kind} skipped (python-socketio could not be installed)")
                    continue
                log(f"(2) fan-out {sockets}: {kind}")
                fig, rss = await bl.fanout_peer(kind, plan)
                results.append((label, fig, rss))
            log(f"(2) fan-out {sockets}: ringlog")
            ours, rss = await bl.fanout_ringlog(str(tmp / f"fan-{sockets}.db"), plan)
            results.append(("**ringlog** (persisted, sequenced)", ours, rss))
            fan_ref[sockets] = results[0][1]
            fan_ours[sockets] = ours
            body.append(f"### {sockets:,} sockets — paced {rate:g} appends/s, burst {plan.burst} appends")
            body.append("")
            body.extend(bl.fanout_rows(results, results[0][1]))
            body.append("")
            cap = {label: 1 / f.burst_cpu_us.median for label, f, _ in results}
            ours_cap = cap[results[-1][0]]
            body.append(
                "Capacity (deliveries per server-CPU-second), ringlog vs: "
                + ", ".join(
                    f"{label.split(' (')[0]} **{ours_cap / c:.2f}×**" for label, c in list(cap.items())[:-1]
                )
                + "."
            )
            body.append("")
        sections["## 2. Fan-out"] = "\n".join(body)

    if want("catchup"):
        n = 30_000 if quick else 100_000
        log(f"(3) catch-up {n}")
        cu = await catchup_workload(tmp, n, reps)
        sections["## 3. Catch-up"] = catchup_section(n, cu)

    if want("connections"):
        rows = [
            "| server | idle sockets | RSS KiB per socket | seconds to accept all |",
            "|---|---:|---:|---:|",
        ]
        for n in (500, 1500) if quick else (1000, 10_000):
            for kind in ("raw", "ringlog"):
                log(f"(4) connections {kind} {n}")
                rss, secs, got = await idle_sockets(kind, str(tmp / f"conn-{n}.db"), n)
                label = "bare aiohttp WebSocket" if kind == "raw" else "**ringlog**"
                rows.append(f"| {label} | {got:,} of {n:,} | {rss:.1f} | {secs:.2f} |")
        sections["## 4. Connections"] = "\n".join(
            [
                "## 4. Connections",
                "",
                "Idle sockets on one draft, opened by client processes (2,500 each, 250 handshakes in flight "
                "per process); RSS growth of the server process divided by the sockets; accept time is until "
                "every socket has its `connected` message (ringlog) or its handshake (bare aiohttp). One rep.",
                "",
                *rows,
                "",
            ]
        )

    if want("store"):
        log("(5) store and projections (scripts/bench_store.py)")
        sections["## Store and projections"] = await store_workload(quick, reps)

    if want("pg"):
        log("(6) PostgreSQL")
        db = await pg_database()
        if db is None:
            sections["## 6. PostgreSQL"] = (
                f"## 6. PostgreSQL\n\nSkipped: no database reachable at `{PG_ADMIN}`.\n"
            )
        else:
            name, url = db
            try:
                rows_http: list[tuple[str, bl.HttpFigures]] = []
                if http_noop is None:
                    http_noop = await noop_workload(seconds, reps)
                rows_http.append(("do-nothing aiohttp POST (ceiling)", http_noop))
                if http_ours is not None:
                    rows_http.append(("ringlog, SQLite, 1 node (from workload 1)", http_ours))
                nodes_lines = await pg_nodes_section(seconds, max(reps, 3))
                fan_rows: list[tuple[str, bl.FanoutFigures, float]] = []
                plan = bl.FanoutPlan(500 if quick else 1000, 2, 20.0, seconds, 100 if not quick else 30, reps)
                for nodes in (1, 2):
                    log(f"(6) PostgreSQL fan-out, {nodes} node(s)")
                    fig, rss = await bl.fanout_ringlog(url, plan, nodes)
                    fan_rows.append((f"ringlog, PostgreSQL, {nodes} node(s)", fig, rss))
                ref = fan_ref.get(plan.sockets)
                if ref is not None:
                    fan_rows.insert(0, ("raw broadcast (ceiling, from workload 2)", ref, float("nan")))
                if plan.sockets in fan_ours:
                    fan_rows.insert(
                        1, ("ringlog, SQLite, 1 node (from workload 2)", fan_ours[plan.sockets], float("nan"))
                    )
                sections["## 6. PostgreSQL"] = "\n".join(
                    [
                        "## 6. PostgreSQL",
                        "",
                        "A throw-away database on the local PostgreSQL (created and dropped by the harness). "
                        "Two nodes: two `ringlog serve` processes on one database; HTTP load split between them "
                        "(two wrk, 32 connections each); sockets split between them, appends through both in turn, "
                        "so half the deliveries cross nodes through LISTEN/NOTIFY and a log read. The database "
                        "server shares the same 2 cores.",
                        "",
                        *http_rows(rows_http, http_noop),
                        "",
                        "HTTP appends with 1 and 2 PostgreSQL nodes (each on a fresh database; same wrk "
                        "script as workload 1, 1 s warm-up, then the measured run):",
                        "",
                        *nodes_lines,
                        "",
                        f"Fan-out, {plan.sockets:,} sockets, paced 20 appends/s for {seconds:g} s, burst {plan.burst} appends:",
                        "",
                        *bl.fanout_rows(fan_rows, ref if ref is not None else fan_rows[0][1]),
                        "",
                    ]
                )
            finally:
                await pg_drop(name)

    if want("workers"):
        log("(7) more than one process: --workers 1 vs 2 on SQLite")
        import bench_workers

        sections["## 7. More than one process"] = await bench_workers.section(tmp, seconds, reps, quick)

    if want("mux"):
        log("(8) one socket, many drafts, and presence (scripts/bench_mux.py)")
        import bench_mux

        sections["## 8. One socket, many drafts, and presence"] = await bench_mux.section(tmp, quick, reps)

    log(f"done in {time.monotonic() - started:.0f} s")
    if only is not None:
        # a partial run keeps the page's "How these figures were made" (the full run's) and says so
        how = sections.pop("## How these figures were made")
        stamp = how.split("\n")[2].split(" — ", 1)[1].split(";", 1)[0]
        for heading, text in sections.items():
            sections[heading] = (
                text.rstrip("\n")
                + f"\n\n_This section alone was re-run with `--only {args.only}` ({stamp}); the other "
                'sections are from the run described under "How these figures were made"._\n'
            )
        return sections
    sections["## How these figures were made"] += f"Whole run: {time.monotonic() - started:.0f} s.\n"
    return sections


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts: under 2 minutes")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--only", default="", help="comma-separated: http,fanout,catchup,connections,store,pg,workers,mux"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    log(f"HTTP load generator: {bl.choose_load_generator()}")
    MISSING_EXTRA.extend(bl.ensure_bench_extra())
    result = asyncio.run(main(arguments))
    for text in result.values():
        print(text)
    if not arguments.no_write:
        bl.write_sections(bl.BENCHMARKS_MD, result)
