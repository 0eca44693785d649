"""The ``--only mux`` section of ``scripts/bench.py`` (issue 14; not part of ringlog).

* **One socket, many drafts vs one socket per draft.** Two ``ringlog serve`` processes, each on
  its own SQLite file with the same 10 drafts' worth of work: one carries S ``/v1/ws`` sockets
  that each subscribe to all 10 drafts, the other 10·S per-draft sockets (S per draft) — the
  same 10·S subscriptions. Server RSS growth per subscription once every socket is subscribed;
  then writers append to the 10 drafts at a fixed paced rate, to one server and then the
  other, in turn, each rep (so both stand beside each other under the same machine load), and
  the client processes count deliveries: server CPU per delivery, client CPU, latency.
* **Presence fan-out per member.** N members (one user id each, viewers of one draft) on
  per-draft sockets; one more member (the harness, as the owner) sets its presence state at a
  paced rate below the server's per-socket presence rate limit; the members' client processes
  count ``presence`` messages. Baseline in the same run: the owner appends segments at the same
  paced rate, and the same sockets count the events. Server CPU per delivered presence message
  vs per delivered event.

Every socket of the first part is the owner's (``--max-sockets-per-user 0``): with a user id per
socket, presence would add a ``join`` per user fanned out to every subscriber of the draft
(users × subscribers messages) to what is measured here; that cost is the second part's.
A stamp ``@<unix time>@`` in each segment's content (and in each presence state) gives latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import bench_mux_memory
import benchlib as bl
import orjson

DRAFTS = 10
TRACED_SOCKETS = 200  # tracemalloc slows the server: per-subscription bytes do not need more


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Window:
    """One paced window measured on one server."""

    deliveries: int
    expected: int
    seconds: float
    server_cpu: float
    client_cpu: float
    p50_ms: float
    p99_ms: float
    appends_cpu: float = 0.0
    """Server CPU of the same paced appends to a draft nobody follows, measured right after."""
    kernel_cpu: float = 0.0
    """The part of ``server_cpu`` spent in the kernel (system time: sends, and on loopback the
    peer's receive path that runs in the sender's system call)."""

    @property
    def kernel_share(self) -> float:
        return self.kernel_cpu / self.server_cpu if self.server_cpu else float("nan")

    @property
    def cpu_us(self) -> float:
        """Server CPU µs per delivery."""
        return self.server_cpu / max(1, self.deliveries) * 1e6

    @property
    def net_us(self) -> float:
        """Server CPU µs per delivery without the appends' own cost (HTTP, commit)."""
        return max(0.0, self.server_cpu - self.appends_cpu) / max(1, self.deliveries) * 1e6


@dataclass
class Variant:
    """One server and its fleet: RSS per subscription and its windows."""

    label: str
    sockets: int = 0
    subscriptions: int = 0
    rss_kib: float = 0.0
    connect_seconds: float = 0.0
    client_procs: int = 0
    windows: list[Window] = field(default_factory=list)

    def median(self, attr: str) -> float:
        values = [getattr(w, attr) for w in self.windows]
        return statistics.median(values) if values else float("nan")


async def paced_posts(
    session: aiohttp.ClientSession, urls: Sequence[str], rate: float, seconds: float, body: Any
) -> int:
    """POST ``body()`` to ``urls`` in turn at ``rate`` per second (all urls together) for ``seconds``."""
    count = max(1, int(rate * seconds))
    start = time.monotonic()

    async def post(url: str) -> None:
        async with session.post(url, data=body(), headers=bl.owner_headers()) as r:
            if r.status >= 300:
                raise RuntimeError(f"POST {url}: {r.status} {await r.text()}")
            await r.read()

    tasks = []
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(post(urls[i % len(urls)])))
    await asyncio.gather(*tasks)
    return count


def system_seconds(pid: int) -> float:
    """System (kernel) CPU seconds of one process, from ``/proc/PID/stat``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[12]) / bl.CLK_TCK


async def appends_alone(server: bl.Server, send: Any) -> float:
    """Server CPU seconds of ``send()`` (paced appends to a draft that no socket follows)."""
    cpu0 = server.cpu_seconds()
    await send()
    await asyncio.sleep(0.1)
    return server.cpu_seconds() - cpu0


async def measured(
    server: bl.Server, fleet: bl.Fleet, send: Any, per_subscription: int, deliveries_expected: int
) -> Window:
    """Mark the fleet, run ``send()`` (the paced writes), collect; CPU of server and clients."""
    await fleet.mark()
    cpu0, client0, t0 = server.cpu_seconds(), fleet.cpu_seconds(), time.monotonic()
    sys0 = system_seconds(server.pid)
    await send()
    got = await fleet.collect(per_subscription, 30)
    elapsed = time.monotonic() - t0
    cpu, client = server.cpu_seconds() - cpu0, fleet.cpu_seconds() - client0
    kernel = system_seconds(server.pid) - sys0
    return Window(
        got["received"],
        deliveries_expected,
        elapsed,
        cpu,
        client,
        bl.pct(got["sample"], 50) * 1000,
        bl.pct(got["sample"], 99) * 1000,
        kernel_cpu=kernel,
    )


# -- one socket, many drafts vs one socket per draft ----------------------------------------------


async def _drafts(base: str) -> list[str]:
    """``DRAFTS`` drafts for the sockets, then one more that no socket follows."""
    async with aiohttp.ClientSession() as session:
        return [await bl.create_draft(session, base) for _ in range(DRAFTS + 1)]


async def mux_vs_per_draft(
    tmp: Path, sockets: int, rate: float, seconds: float, reps: int
) -> tuple[Variant, Variant, float]:
    """(``/v1/ws`` variant, per-draft variant, load average at the end)."""
    mux_server = bl.ringlog_server(str(tmp / "mux.db"), "ringlog-mux")
    per_server = bl.ringlog_server(str(tmp / "perdraft.db"), "ringlog-perdraft")
    mux = Variant(f"**`/v1/ws`**: {sockets:,} sockets × {DRAFTS} drafts")
    per = Variant(f"per-draft sockets: {sockets * DRAFTS:,} (= {sockets:,} per draft)")
    fleets: list[bl.Fleet] = []
    try:
        mux_server.start()
        per_server.start()
        *mux_drafts, mux_quiet = await _drafts(mux_server.url)
        *per_drafts, per_quiet = await _drafts(per_server.url)
        mux_url = f"{mux_server.ws_base}/v1/ws?user_id={bl.OWNER}"
        per_urls = [f"{per_server.ws_base}/v1/ws/drafts/{d}?user_id={bl.OWNER}" for d in per_drafts]
        # warm-up: imports and first-use allocations are not counted per subscription
        async with bl.Fleet([mux_url], 2, 1, subscribe=mux_drafts):
            pass
        async with bl.Fleet(per_urls, 2 * DRAFTS, 1, every_url=True):
            pass
        await asyncio.sleep(0.5)
        plans = (
            (mux, mux_server, [mux_url], sockets, mux_drafts),
            (per, per_server, per_urls, sockets * DRAFTS, []),
        )
        for variant, server, urls, n, subscribe in plans:
            log(f"(8) {variant.label}: connecting")
            rss0 = server.rss_kib()
            procs = max(2, n // 2500)
            fleet = bl.Fleet(urls, n, procs, concurrency=250, every_url=True, subscribe=subscribe)
            fleets.append(fleet)
            variant.client_procs = procs
            await fleet.start(timeout=300)
            await asyncio.sleep(1.0)
            variant.sockets = fleet.connected
            variant.subscriptions = fleet.connected * (DRAFTS if variant is mux else 1)
            variant.rss_kib = (server.rss_kib() - rss0) / max(1, variant.subscriptions)
            variant.connect_seconds = fleet.connect_seconds
        mux_fleet, per_fleet = fleets
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

            def segments(server: bl.Server, drafts: Sequence[str]) -> list[str]:
                return [f"{server.url}/v1/collab/drafts/{d}/segments" for d in drafts]

            targets = {
                id(mux): (mux_server, mux_fleet, segments(mux_server, mux_drafts), segments(mux_server, [mux_quiet])),
                id(per): (per_server, per_fleet, segments(per_server, per_drafts), segments(per_server, [per_quiet])),
            }  # fmt: skip
            for _, fleet, posts, _ in targets.values():  # one first delivery to every subscription
                await paced_posts(session, posts, 50.0, DRAFTS / 50.0, bl.stamped_content)
                await fleet.collect(1, 30)
            for rep in range(reps):
                order = (mux, per) if rep % 2 == 0 else (per, mux)
                for variant in order:
                    server, fleet, posts, quiet = targets[id(variant)]
                    per_draft = max(1, int(rate * seconds))

                    async def send(s: aiohttp.ClientSession = session, p: list[str] = posts) -> None:
                        await paced_posts(s, p, rate * DRAFTS, seconds, bl.stamped_content)

                    async def send_quiet(s: aiohttp.ClientSession = session, p: list[str] = quiet) -> None:
                        await paced_posts(s, p, rate * DRAFTS, seconds, bl.stamped_content)

                    log(f"(8) rep {rep + 1}/{reps}: {variant.label}")
                    window = await measured(server, fleet, send, per_draft, per_draft * variant.subscriptions)
                    window.appends_cpu = await appends_alone(server, send_quiet)
                    variant.windows.append(window)
                    await asyncio.sleep(0.3)
    finally:
        for fleet in fleets:
            await fleet.stop()
        mux_server.__exit__()
        per_server.__exit__()
    return mux, per, os.getloadavg()[0]


# -- presence fan-out -----------------------------------------------------------------------------


@dataclass
class PresenceRun:
    members: int = 0
    supported: bool = True
    join_cpu: float = 0.0
    """Server CPU seconds from before the members connect to 1 s after (handshakes, syncs, joins)."""
    note: str = ""
    presence: list[Window] = field(default_factory=list)
    events: list[Window] = field(default_factory=list)


async def _add_members(base: str, draft: str, members: int) -> None:
    gate = asyncio.Semaphore(8)
    async with aiohttp.ClientSession() as session:

        async def add(i: int) -> None:
            body = orjson.dumps({"user_id": f"bench-member-{i}", "role": "viewer"})
            async with (
                gate,
                session.post(
                    f"{base}/v1/collab/drafts/{draft}/collaborators", data=body, headers=bl.owner_headers()
                ) as r,
            ):
                if r.status != 201:
                    raise RuntimeError(f"add collaborator: {r.status} {await r.text()}")

        await asyncio.gather(*(add(i) for i in range(members)))


async def presence_fanout(tmp: Path, members: int, rate: float, seconds: float, reps: int) -> PresenceRun:
    """Presence updates vs appends, one draft, ``members`` member sockets counting deliveries."""
    run = PresenceRun(members)
    server = bl.ringlog_server(str(tmp / "presence.db"), "ringlog-presence")
    try:
        server.start()
        async with aiohttp.ClientSession() as session:
            draft = await bl.create_draft(session, server.url)
            quiet = await bl.create_draft(session, server.url)  # appends alone: nobody follows it
        await _add_members(server.url, draft, members)
        url = f"{server.ws_base}/v1/ws/drafts/{draft}?user_id=bench-member-{{i}}"
        log(f"(8) presence: {members} members connecting")
        join_cpu0 = server.cpu_seconds()
        async with (
            bl.Fleet([url], members, max(1, members // 2500 + 1), concurrency=100, every_url=True) as fleet,
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{server.ws_base}/v1/ws/drafts/{draft}?user_id={bl.OWNER}") as updater,
        ):
            refusals: list[str] = []

            async def drain() -> None:  # the updater reads its echoes, so its socket never backs up
                async for msg in updater:
                    if msg.type == aiohttp.WSMsgType.TEXT and b'"error"' in msg.data.encode():
                        refusals.append(msg.data[:200])

            reader = asyncio.ensure_future(drain())
            try:
                await asyncio.sleep(1.0)  # the members' joins have fanned out
                run.members = fleet.connected
                run.join_cpu = server.cpu_seconds() - join_cpu0

                async def presence_updates() -> None:
                    count = max(1, int(rate * seconds))
                    start = time.monotonic()
                    for i in range(count):
                        delay = start + i / rate - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        state = {"typing": True, "t": f"@{time.time():.6f}@"}
                        await updater.send_str(orjson.dumps({"type": "presence", "state": state}).decode())

                async def appends() -> None:
                    posts = [f"{server.url}/v1/collab/drafts/{draft}/segments"]
                    await paced_posts(session, posts, rate, seconds, bl.stamped_content)

                async def appends_quiet() -> None:
                    posts = [f"{server.url}/v1/collab/drafts/{quiet}/segments"]
                    await paced_posts(session, posts, rate, seconds, bl.stamped_content)

                # is presence there at all? (before issue 14's presence lands: bad_message)
                await fleet.mark()
                state = {"t": f"@{time.time():.6f}@"}
                await updater.send_str(orjson.dumps({"type": "presence", "state": state}).decode())
                probe = await fleet.collect(1, 5)
                if probe["received"] == 0:
                    run.supported = False
                    run.note = refusals[0] if refusals else "no presence message reached the members"
                    return run
                per = max(1, int(rate * seconds))
                for rep in range(reps):
                    log(f"(8) presence rep {rep + 1}/{reps}")
                    for kind in ("presence", "events") if rep % 2 == 0 else ("events", "presence"):
                        send = presence_updates if kind == "presence" else appends
                        window = await measured(server, fleet, send, per, per * run.members)
                        if kind == "events":
                            window.appends_cpu = await appends_alone(server, appends_quiet)
                        (run.presence if kind == "presence" else run.events).append(window)
                        await asyncio.sleep(0.3)
                if refusals:
                    run.note = refusals[0]
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
    finally:
        server.__exit__()
    return run


# -- the section ----------------------------------------------------------------------------------


def _med(windows: Sequence[Window], attr: str) -> float:
    values = [getattr(w, attr) for w in windows]
    return statistics.median(values) if values else float("nan")


def _span(windows: Sequence[Window], attr: str, fmt: str) -> str:
    values = [getattr(w, attr) for w in windows]
    if not values:
        return "–"
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def _window_row(label: str, subs: str, windows: Sequence[Window], base: Sequence[Window]) -> str:
    lost = sum(w.expected - w.deliveries for w in windows)
    rate = [w.deliveries / w.seconds for w in windows]
    client = [w.client_cpu / w.seconds for w in windows]
    return (
        f"| {label} | {subs} | {_span(windows, 'cpu_us', '{:.2f}')} | "
        f"{bl.ratio(_med(windows, 'cpu_us'), _med(base, 'cpu_us'))} | "
        f"{_med(windows, 'net_us'):.2f} | {bl.ratio(_med(windows, 'net_us'), _med(base, 'net_us'))} | "
        f"{_med(windows, 'kernel_share') * 100:.0f}% | "
        f"{statistics.median(rate):,.0f} | {statistics.median(client):.2f} | "
        f"{_med(windows, 'p50_ms'):.1f} / {_med(windows, 'p99_ms'):.1f} | {lost} |"
    )


async def section(tmp: Path, quick: bool, reps: int) -> str:
    """The ``## 8.`` section of docs/BENCHMARKS.md."""
    sockets, rate, seconds = (200, 3.0, 3.0) if quick else (1000, 3.0, 5.0)
    members, p_rate, p_seconds = (200, 8.0, 5.0) if quick else (1000, 8.0, 5.0)
    scale = (
        f"**Quick run (`--quick`): scaled down to {sockets:,} `/v1/ws` sockets × {DRAFTS} vs "
        f"{sockets * DRAFTS:,} per-draft sockets, {members:,} presence members.** "
        "The full run: 1,000 × 10 vs 10,000, 1,000 members.\n\n"
        if quick
        else ""
    )
    log(
        f"(8) one socket, many drafts: {sockets} x {DRAFTS} vs {sockets * DRAFTS}"
        + (" (--quick: scaled down from 1000 x 10 vs 10000)" if quick else "")
    )
    mux, per, load = await mux_vs_per_draft(tmp, sockets, rate, seconds, reps)
    log(f"(8) presence fan-out: {members} members")
    pres = await presence_fanout(tmp, members, p_rate, p_seconds, reps)
    load_end = os.getloadavg()[0]
    log(f"(8) tracemalloc, in process: {TRACED_SOCKETS} x {DRAFTS} vs {TRACED_SOCKETS * DRAFTS}")
    per_t, mux_t = await bench_mux_memory.measure(TRACED_SOCKETS)
    rows = [
        "| sockets | subscriptions | RSS KiB per subscription | vs per-draft | RSS KiB per socket "
        "| seconds to connect and subscribe all |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for v in (per, mux):
        rows.append(
            f"| {v.label} | {v.subscriptions:,} | {v.rss_kib:.1f} | {bl.ratio(v.rss_kib, per.rss_kib)} "
            f"| {v.rss_kib * v.subscriptions / max(1, v.sockets):.1f} | {v.connect_seconds:.2f} |"
        )
    deliveries = [
        "| sockets | subscriptions | server CPU µs per delivery (min / med / max) | vs per-draft "
        "| net of the appends (med) | vs per-draft | in the kernel (med) "
        "| deliveries/s (med) | client cores (med) | p50 / p99 ms (med) | lost |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|",
        _window_row(per.label, f"{per.subscriptions:,}", per.windows, per.windows),
        _window_row(mux.label, f"{mux.subscriptions:,}", mux.windows, per.windows),
    ]
    out = [
        "## 8. One socket, many drafts, and presence",
        "",
        scale
        + f"Two `ringlog serve` processes side by side, each with {DRAFTS} drafts on its own SQLite file. "
        f"One carries {mux.sockets:,} `GET /v1/ws` sockets, each subscribed to all {DRAFTS} drafts; the other "
        f"{per.sockets:,} per-draft sockets (`/v1/ws/drafts/{{id}}`, {per.sockets // DRAFTS:,} per draft): "
        "the same subscriptions. All sockets are the owner's (`--max-sockets-per-user 0`), so presence "
        "(one entry per user per draft) adds nothing here; client processes "
        "(`bench_clients.py sockets --subscribe`) hold the sockets and count deliveries, separate from "
        "the servers. RSS: growth of each server process from before the first socket to 1 s after the "
        "last subscription is answered, divided by the subscriptions (after a warm-up fleet). Then the "
        f"harness appends to the {DRAFTS} drafts of one server at {rate:g} appends/s per draft "
        f"({rate * DRAFTS:g}/s in all, HTTP, durable) for {seconds:g} s, then of the other, in turn "
        f"({reps} reps, the order alternating), so each figure stands beside the other under the same "
        "machine load. Server CPU (`/proc/PID/stat`, 10 ms ticks) from the first append to the last "
        "delivery counted, divided by deliveries; it includes the appends themselves (the same "
        f"{rate * DRAFTS:g}/s for both) and protocol pings. *Net of the appends*: minus the server CPU "
        "of the same paced appends to an 11th draft that no socket follows, measured right after each "
        "window (the fan-out's own cost). *In the kernel*: the system-time share of the server's CPU "
        "(sends; on loopback the receiving side's TCP work runs in the sender's system call too). "
        "*Client cores*: CPU of the client processes "
        f"over the window: {mux.client_procs} processes hold the `/v1/ws` sockets, {per.client_procs} the "
        "per-draft ones (they run on the same 2 cores as the servers).",
        "",
        *rows,
        "",
        *deliveries,
        "",
    ]
    if pres.supported:
        out += [
            f"**Presence fan-out.** {pres.members:,} members (one user id each, viewers) on per-draft sockets of one "
            f"draft, plus the owner's socket; the owner sets its presence state (`{{\"typing\": true, "
            f"\"t\": \"@<time>@\"}}`) {p_rate:g} times a second for {p_seconds:g} s (below the server's "
            "per-socket presence rate, so nothing is coalesced); the members' client processes count the "
            "`presence` messages. Baseline, the same sockets in the same run: the owner appends segments "
            f"at the same {p_rate:g}/s (reps alternate presence and events); *net of the appends* as above "
            "(a presence update has no append: its two columns are the same).",
            "",
            "| what | members | server CPU µs per delivery (min / med / max) | vs an event "
            "| net of the appends (med) | vs an event | in the kernel (med) "
            "| deliveries/s (med) | client cores (med) | p50 / p99 ms (med) | lost |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|",
            _window_row("event (`collab.segment_added`, durable append)", f"{pres.members:,}", pres.events, pres.events),
            _window_row("**presence `update`**", f"{pres.members:,}", pres.presence, pres.events),
            "",
        ]  # fmt: skip
        m = pres.members
        out += [
            f"Connecting the {m:,} members one after another (100 handshakes in flight) took "
            f"{pres.join_cpu:.2f} s of server CPU: {m:,} handshakes, {m:,} `presence_sync`s of up to {m:,} "
            f"members each and up to {m * (m - 1) // 2:,} `join` deliveries (each member's join goes "
            "to everyone already there): a join is a presence message like an update, so a draft "
            "that N people open at once costs about N²/2 of them.",
            "",
        ]
        if pres.note:
            out += [f"The updater was answered: `{pres.note}`.", ""]
    else:
        out += [
            f"**Presence fan-out**: not measured in this run — the server did not fan out presence "
            f"(`{pres.note}`). The harness part is ready (`presence_fanout` in `scripts/bench_mux.py`).",
            "",
        ]
    out += [
        f"Where the memory goes: `tracemalloc` with the app in the harness's process "
        f"(`scripts/bench_mux_memory.py`: `create_app` on the in-memory store, default asyncio loop, "
        f"{TRACED_SOCKETS:,} `/v1/ws` sockets × {DRAFTS} vs {TRACED_SOCKETS * DRAFTS:,} per-draft sockets, "
        "clients in their own processes), growth of the Python heap between a snapshot before the "
        "sockets and one after, by the source file that allocated it, per subscription:",
        "",
        *bench_mux_memory.rows(per_t, mux_t),
        "",
    ]
    mux_cpu, per_cpu = mux.median("cpu_us"), per.median("cpu_us")
    summary = (
        f"Per subscription, the multiplexed socket costs **{bl.ratio(mux.rss_kib, per.rss_kib)}** the "
        f"memory of a per-draft socket and **{bl.ratio(mux_cpu, per_cpu)}** the server CPU per delivery "
        f"({bl.ratio(mux.median('net_us'), per.median('net_us'))} net of the appends)."
    )
    if pres.supported and pres.presence:
        summary += (
            f" A presence update costs **{bl.ratio(_med(pres.presence, 'cpu_us'), _med(pres.events, 'cpu_us'))}**"
            " the server CPU per member of an appended event's delivery "
            f"({bl.ratio(_med(pres.presence, 'net_us'), _med(pres.events, 'net_us'))} of the event's fan-out alone)."
        )
    out += [
        summary + f" Load average {load:.1f} after the first part, {load_end:.1f} at the end "
        "(other engineers' work shares the 2 cores: compare the ratios, measured moments apart, "
        "rather than absolute figures).",
        "",
    ]
    return "\n".join(out)
