"""Benchmark the event store and the projections (not a test): one run prints one table.

Measured in the same run, on the same machine, so that ratios mean something:

* appends/s through ``SQLiteStore``'s group-commit writer, 1 and 200 concurrent producers,
  ``synchronous`` FULL and NORMAL (1,000 drafts round-robin, ~250-byte events);
* the machine's ceiling for that workload: a bare aiosqlite group-commit loop (a queue, one
  writer, ``BEGIN IMMEDIATE`` + ``executemany`` + ``COMMIT``) with no checks, hashes or triggers;
* the peer: the same events through the ``eventsourcing`` library's SQLite aggregate recorder
  (one transaction per append, as an application using it makes; called directly for one
  producer, through ``asyncio.to_thread`` for 200);
* fold/rebuild events/s: ``projections.runner.rebuild`` over a 100k-event log (read, decode,
  fold, save snapshots) and the pure fold of the decoded events.

Each figure is min / median / max over ``--reps`` runs (fresh database each run). Results go
to stdout and to ``docs/BENCHMARKS.md`` under "## Store and projections" (other sections of
that file are kept).

    python scripts/bench_store.py            # full run (a few minutes)
    python scripts/bench_store.py --quick    # smaller counts, for a smoke check
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from eventstore import NewEvent
from eventstore.sqlite import SQLiteStore
from projections.decide import SEGMENT_ID_IS_LOG_POSITION
from projections.event_types import EventType
from projections.fold import LogFolder
from projections.runner import rebuild

TS = "2025-12-23T20:30:45.123Z"
DRAFTS = 1000
CONTENT = "lorem ipsum dolor sit amet, " * 4  # ~110 chars: ~250-byte bodies
SECTION = "## Store and projections"


def segment_event(user: str, position: int) -> NewEvent:
    """A realistic ``collab.segment_added`` event; the store fills in the segment id."""
    seg = {"id": 0, "author_user_id": user, "content": CONTENT, "position": position, "created_at": TS}
    return NewEvent(EventType.SEGMENT_ADDED, user, TS, {"segment": seg}, SEGMENT_ID_IS_LOG_POSITION)


def created_event(user: str) -> NewEvent:
    return NewEvent(EventType.DRAFT_CREATED, user, TS, {"title": "T", "description": "", "creator_id": user})


@dataclass
class Figures:
    label: str
    values: list[float]
    unit: str = "events/s"

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def row(self, baseline: dict[str, float]) -> str:
        lo, mid, hi = min(self.values), self.median, max(self.values)
        ratios = " · ".join(f"{mid / b:.2f}× {name}" for name, b in baseline.items() if b)
        return f"| {self.label} | {lo:,.0f} | {mid:,.0f} | {hi:,.0f} | {ratios} |"


# -- workloads ------------------------------------------------------------------------------------


def producer_drafts(producers: int, index: int) -> list[str]:
    """Producer ``index`` owns every ``producers``-th draft: no conflicts, 1,000 drafts in all."""
    return [f"draft_{d:04d}" for d in range(index, DRAFTS, producers)] or [f"draft_{index:04d}"]


async def ringlog_appends(path: Path, synchronous: str, producers: int, events: int) -> float:
    """Appends/s through SQLiteStore's group-commit writer."""
    store = SQLiteStore(path, synchronous=synchronous)
    await store.open()
    try:
        per_producer = events // producers

        async def producer(index: int) -> None:
            drafts = producer_drafts(producers, index)
            heads = dict.fromkeys(drafts, 0)
            for n in range(per_producer):
                draft = drafts[n % len(drafts)]
                head = heads[draft]
                event = created_event("u") if head == 0 else segment_event("u", head)
                await store.append(draft, [event], head)
                heads[draft] = head + 1

        started = time.perf_counter()
        await asyncio.gather(*(producer(i) for i in range(producers)))
        elapsed = time.perf_counter() - started
        assert await store.last_position() == per_producer * producers
        return per_producer * producers / elapsed
    finally:
        await store.close()


BARE_SCHEMA = """
CREATE TABLE events (
    position INTEGER PRIMARY KEY, draft_id TEXT NOT NULL, seq INTEGER NOT NULL,
    type TEXT NOT NULL, body BLOB NOT NULL, UNIQUE (draft_id, seq)
)
"""


async def bare_group_commit(path: Path, synchronous: str, producers: int, events: int) -> float:
    """The ceiling: one aiosqlite writer committing whatever is queued, nothing else."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute(f"PRAGMA synchronous = {synchronous}")
    await conn.execute(BARE_SCHEMA)
    queue: asyncio.Queue[tuple[str, int, bytes, asyncio.Future[None]]] = asyncio.Queue()

    async def writer() -> None:
        position = 0
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            rows = []
            for draft, seq, body, _ in batch:
                position += 1
                rows.append((position, draft, seq, EventType.SEGMENT_ADDED, body))
            await conn.execute("BEGIN IMMEDIATE")
            await conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", rows)
            await conn.execute("COMMIT")
            for *_, future in batch:
                future.set_result(None)

    per_producer = events // producers
    loop = asyncio.get_running_loop()

    async def producer(index: int) -> None:
        drafts = producer_drafts(producers, index)
        heads = dict.fromkeys(drafts, 0)
        for n in range(per_producer):
            draft = drafts[n % len(drafts)]
            heads[draft] += 1
            new = segment_event("u", heads[draft])
            body = orjson.dumps(new.materialise(draft, heads[draft], 0), option=orjson.OPT_SORT_KEYS)
            future: asyncio.Future[None] = loop.create_future()
            await queue.put((draft, heads[draft], body, future))
            await future

    task = asyncio.create_task(writer())
    try:
        started = time.perf_counter()
        await asyncio.gather(*(producer(i) for i in range(producers)))
        elapsed = time.perf_counter() - started
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await conn.close()
    return per_producer * producers / elapsed


async def eventsourcing_appends(path: Path, synchronous: str, producers: int, events: int) -> float:
    """The peer: eventsourcing's SQLiteAggregateRecorder, one transaction per append."""
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.sqlite import SQLiteAggregateRecorder, SQLiteDatastore

    del synchronous  # the library leaves SQLite's default (FULL) in place
    datastore = SQLiteDatastore(str(path), originator_id_type="text")
    recorder = SQLiteAggregateRecorder(datastore, "stored_events")
    recorder.create_table()
    per_producer = events // producers

    def stored(draft: str, seq: int) -> StoredEvent:
        new = segment_event("u", seq)
        body = orjson.dumps(new.materialise(draft, seq, 0), option=orjson.OPT_SORT_KEYS)
        return StoredEvent(
            originator_id=draft, originator_version=seq, topic=EventType.SEGMENT_ADDED, state=body
        )

    async def producer(index: int) -> None:
        drafts = producer_drafts(producers, index)
        heads = dict.fromkeys(drafts, 0)
        for n in range(per_producer):
            draft = drafts[n % len(drafts)]
            heads[draft] += 1
            event = stored(draft, heads[draft])
            if producers == 1:
                recorder.insert_events([event])  # the cheapest way for one producer
            else:
                await asyncio.to_thread(recorder.insert_events, [event])

    try:
        started = time.perf_counter()
        await asyncio.gather(*(producer(i) for i in range(producers)))
        elapsed = time.perf_counter() - started
    finally:
        datastore.close()
    return per_producer * producers / elapsed


# -- rebuild --------------------------------------------------------------------------------------


async def build_log(path: Path, events: int, drafts: int = 100) -> None:
    """A realistic log: each draft has collaborators, mostly segments, some passes and renames."""
    store = SQLiteStore(path, synchronous="NORMAL")
    await store.open()
    try:
        users = ["alice", "bob", "carol"]
        per_draft = events // drafts

        async def write(d: int) -> None:
            draft = f"draft_{d:04d}"
            creator = users[d % 3]
            others = [u for u in users if u != creator]
            batch: list[NewEvent] = [created_event(creator)]
            batch += [
                NewEvent(
                    EventType.COLLABORATOR_ADDED,
                    creator,
                    TS,
                    {"collaborator_id": u, "role": "contributor", "joined_at": TS},
                )
                for u in others
            ]
            holders = [creator]
            segments = 0
            while len(batch) < per_draft:
                k = len(batch)
                if k % 10 == 0:
                    to = others[k % 2] if holders[-1] == creator else creator
                    data = {"from_user_id": holders[-1], "to_user_id": to, "current_holder_id": to}
                    holders.append(to)
                    batch.append(
                        NewEvent(
                            EventType.RING_PASSED,
                            data["from_user_id"],
                            TS,
                            {**data, "holders_history": list(holders)},
                        )
                    )
                elif k % 37 == 0:
                    batch.append(NewEvent(EventType.DRAFT_UPDATED, creator, TS, {"title": f"T{k}"}))
                else:
                    segments += 1
                    batch.append(segment_event(holders[-1], segments))
            head = 0
            for start in range(0, len(batch), 100):
                chunk = batch[start : start + 100]
                await store.append(draft, chunk, head)
                head += len(chunk)

        await asyncio.gather(*(write(d) for d in range(drafts)))
    finally:
        await store.close()


async def rebuild_rate(path: Path) -> float:
    store = SQLiteStore(path)
    await store.open()
    try:
        started = time.perf_counter()
        count = await rebuild(store)
        return count / (time.perf_counter() - started)
    finally:
        await store.close()


async def fold_rate(path: Path) -> float:
    """Fold only: the whole log's envelopes, already read and decoded, through a LogFolder."""
    store = SQLiteStore(path)
    await store.open()
    try:
        envelopes: list[dict[str, Any]] = []
        while page := await store.read_bodies(len(envelopes), 5000):
            envelopes.extend(orjson.loads(body) for _, body in page)
        started = time.perf_counter()
        folder = LogFolder()
        for envelope in envelopes:
            folder.add_envelope(envelope)
        states = folder.states()
        elapsed = time.perf_counter() - started
        assert sum(s.seq for s in states.values()) == len(envelopes)
        return len(envelopes) / elapsed
    finally:
        await store.close()


# -- driver ---------------------------------------------------------------------------------------


Runner = Callable[[Path], Awaitable[float]]


async def measure(
    reps: int, tmp: Path, runners: dict[str, Runner], fresh: bool = True
) -> dict[str, list[float]]:
    """Run each runner ``reps`` times, interleaved (a, b, a, b…) so that load drifts hit all alike."""
    values: dict[str, list[float]] = {name: [] for name in runners}
    for rep in range(reps):
        for name, run in runners.items():
            path = tmp / f"{name}-{rep}.db" if fresh else tmp / f"{name}.db"
            values[name].append(await run(path))
            print(f"  {name} rep {rep + 1}: {values[name][-1]:,.0f}/s", file=sys.stderr, flush=True)
    return values


def _runner(
    fn: Callable[[Path, str, int, int], Awaitable[float]], sync: str, producers: int, events: int
) -> Runner:
    async def run(path: Path) -> float:
        return await fn(path, sync, producers, events)

    return run


async def main(args: argparse.Namespace) -> str:
    quick = args.quick
    reps = args.reps
    many = 5_000 if quick else 30_000  # events per run with 200 producers
    one = 500 if quick else 3_000  # events per run with 1 producer (one fsync each under FULL)
    log_size = 20_000 if quick else 100_000
    rows: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="ringlog-bench-", dir=args.tmp))

    ceilings: dict[tuple[str, int], float] = {}
    peers: dict[int, float] = {}
    results: list[tuple[str, int, Figures]] = []
    for sync in ("FULL", "NORMAL"):
        for producers, events in ((1, one), (200, many)):
            got = await measure(
                reps,
                tmp,
                {
                    f"bare-{sync}-{producers}": _runner(bare_group_commit, sync, producers, events),
                    f"ringlog-{sync}-{producers}": _runner(ringlog_appends, sync, producers, events),
                },
            )
            bare, ours = got.values()
            ceilings[(sync, producers)] = statistics.median(bare)
            label = f"{producers} producer{'s' if producers > 1 else ''}, {sync}"
            results.append((sync, producers, Figures(f"bare aiosqlite group-commit loop, {label}", bare)))
            results.append((sync, producers, Figures(f"**ringlog SQLiteStore**, {label}", ours)))
    for producers, events in ((1, one), (200, many // 3)):
        got = await measure(
            reps,
            tmp,
            {f"eventsourcing-{producers}": _runner(eventsourcing_appends, "FULL", producers, events)},
        )
        peer = got[f"eventsourcing-{producers}"]
        peers[producers] = statistics.median(peer)
        label = f"{producers} producer{'s' if producers > 1 else ''}, FULL"
        results.append(("FULL", producers, Figures(f"eventsourcing SQLiteAggregateRecorder, {label}", peer)))

    best_peer = max(peers.values())
    for sync, producers, fig in results:
        rows.append(fig.row({"bare loop": ceilings[(sync, producers)], "best peer": best_peer}))

    log_path = tmp / "rebuild.db"
    await build_log(log_path, log_size)

    async def rebuild_run(_path: Path) -> float:
        return await rebuild_rate(log_path)

    async def fold_run(_path: Path) -> float:
        return await fold_rate(log_path)

    got = await measure(reps, tmp, {"rebuild": rebuild_run, "fold": fold_run}, fresh=False)
    reb = Figures(f"rebuild (read + decode + fold + save snapshots), {log_size:,}-event log", got["rebuild"])
    fold = Figures(f"fold only (LogFolder over decoded envelopes), {log_size:,} events", got["fold"])
    rows.append(reb.row({}))
    rows.append(fold.row({}))

    ours_200_full = next(f.median for s, c, f in results if s == "FULL" and c == 200 and "ringlog" in f.label)
    summary = [
        f"* ringlog, 200 producers, FULL: **{ours_200_full / ceilings[('FULL', 200)]:.2f}×** the bare group-commit "
        f"loop (target ≥ 0.8×) and **{ours_200_full / best_peer:.1f}×** the eventsourcing recorder's best "
        f"(target ≥ 3×).",
        f"* rebuild: **{reb.median:,.0f} events/s** (target ≥ 200k/s).",
    ]
    header = [
        SECTION,
        "",
        f"`python scripts/bench_store.py{' --quick' if quick else ''}` — {time.strftime('%Y-%m-%d')}, "
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs "
        f"(load average {os.getloadavg()[0]:.1f} at the end: other work on the machine widens min–max), "
        f"aiosqlite {aiosqlite.__version__}, SQLite {__import__('sqlite3').sqlite_version}; "
        f"{reps} reps, fresh database per rep; 1,000 drafts round-robin, ~250-byte events; "
        f"{many:,} events per 200-producer run, {one:,} per 1-producer run "
        f"(eventsourcing with 200 producers: {many // 3:,}).",
        "",
        "| what | min | median | max | median vs |",
        "|---|---:|---:|---:|---|",
    ]
    shutil.rmtree(tmp, ignore_errors=True)
    return "\n".join([*header, *rows, "", *summary, ""])


def write_section(path: Path, section: str) -> None:
    """Replace (or add) this benchmark's section, keeping every other section of the file."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    parser.add_argument("--reps", type=int, default=3, help="runs per figure (min/median/max)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    parser.add_argument("--tmp", default=None, help="directory for the scratch databases")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    result = asyncio.run(main(arguments))
    print(result)
    if not arguments.no_write:
        write_section(arguments.out, result)
