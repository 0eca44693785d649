"""Where a subscription's memory goes: ``tracemalloc`` in a server run in this process.

Part of ``scripts/bench.py --only mux`` (issue 14; not part of ringlog). The app
(``server.app.create_app``, on a :class:`~eventstore.memory.MemoryStore`) runs in this process;
the sockets are held by ``bench_clients.py`` processes, so every allocation traced between the
two snapshots is the server's (plus a few of the harness's pipes to those processes). Python
heap only: the kernel's socket buffers are not in it (nor in RSS).

    python scripts/bench_mux_memory.py [--sockets 200]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import benchlib as bl
from aiohttp import web

from eventstore.memory import MemoryStore
from server.app import create_app
from server.settings import Settings

DRAFTS = 10


@dataclass
class Traced:
    """Bytes per subscription traced between the snapshots, by source file."""

    subscriptions: int = 0
    total: float = 0.0
    by_file: dict[str, float] = field(default_factory=dict)
    by_line: dict[str, float] = field(default_factory=dict)


def _short(filename: str) -> str:
    """A source file named from the package it belongs to (``aiohttp/web_ws.py``, ``server/hub.py``)."""
    path = Path(filename)
    for anchor in ("site-packages", "lib/python3.11", str(bl.ROOT)):
        text = str(path)
        if anchor in text:
            return text.split(anchor, 1)[1].lstrip("/")
    return path.name


async def traced(kind: str, sockets: int) -> Traced:
    """``kind`` ``mux`` (``sockets`` × 10 drafts on ``/v1/ws``) or ``per-draft`` (10 × ``sockets``)."""
    settings = Settings(dev_auth=True, rate_limit=0.0, max_sockets_per_user=0, db="memory:")
    app = create_app(settings, MemoryStore())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base, ws_base = f"http://{host}:{port}", f"ws://{host}:{port}"
    out = Traced()
    try:
        async with aiohttp.ClientSession() as session:
            drafts = [await bl.create_draft(session, base) for _ in range(DRAFTS)]
        if kind == "mux":
            urls, n, subscribe = [f"{ws_base}/v1/ws?user_id={bl.OWNER}"], sockets, drafts
        else:
            urls = [f"{ws_base}/v1/ws/drafts/{d}?user_id={bl.OWNER}" for d in drafts]
            n, subscribe = sockets * DRAFTS, []
        async with bl.Fleet(urls, min(n, 2 * DRAFTS), 1, every_url=True, subscribe=subscribe):
            pass  # warm-up: first-use allocations are not counted per subscription
        await asyncio.sleep(0.3)
        gc.collect()
        before = tracemalloc.take_snapshot()
        async with bl.Fleet(urls, n, 2, concurrency=100, every_url=True, subscribe=subscribe) as fleet:
            await asyncio.sleep(1.0)
            gc.collect()
            after = tracemalloc.take_snapshot()
            out.subscriptions = fleet.connected * (DRAFTS if kind == "mux" else 1)
    finally:
        await runner.cleanup()
    per = max(1, out.subscriptions)
    for stat in after.compare_to(before, "lineno"):
        frame = stat.traceback[0]
        name = _short(frame.filename)
        out.by_file[name] = out.by_file.get(name, 0.0) + stat.size_diff / per
        out.by_line[f"{name}:{frame.lineno}"] = stat.size_diff / per
        out.total += stat.size_diff / per
    return out


async def measure(sockets: int) -> tuple[Traced, Traced]:
    """(per-draft, mux) with tracemalloc on for both."""
    tracemalloc.start(1)
    try:
        return await traced("per-draft", sockets), await traced("mux", sockets)
    finally:
        tracemalloc.stop()


def rows(per: Traced, mux: Traced, top: int = 10) -> list[str]:
    """Markdown: the files that grew most, bytes per subscription, per-draft beside mux."""
    names = sorted(
        set(per.by_file) | set(mux.by_file), key=lambda f: -max(per.by_file.get(f, 0), mux.by_file.get(f, 0))
    )
    out = [
        f"| allocated in | per-draft sockets ({per.subscriptions:,} subscriptions), bytes per subscription "
        f"| `/v1/ws` ({mux.subscriptions:,} subscriptions), bytes per subscription |",
        "|---|---:|---:|",
    ]
    shown_per = shown_mux = 0.0
    for name in names[:top]:
        p, m = per.by_file.get(name, 0.0), mux.by_file.get(name, 0.0)
        shown_per, shown_mux = shown_per + p, shown_mux + m
        out.append(f"| `{name}` | {p:,.0f} | {m:,.0f} |")
    out.append(f"| everything else | {per.total - shown_per:,.0f} | {mux.total - shown_mux:,.0f} |")
    out.append(f"| **Python heap in all** | **{per.total:,.0f}** | **{mux.total:,.0f}** |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=200, help="/v1/ws sockets (per-draft: 10x)")
    args = parser.parse_args()
    bl.raise_nofile()
    per, mux = asyncio.run(measure(args.sockets))
    print("\n".join(rows(per, mux)))
    for label, t in (("per-draft", per), ("mux", mux)):
        print(f"\n{label}, top lines (bytes per subscription):")
        for line, size in sorted(t.by_line.items(), key=lambda kv: -kv[1])[:15]:
            print(f"  {size:8,.0f}  {line}")


if __name__ == "__main__":
    sys.exit(main())
