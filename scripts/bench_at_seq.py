"""Benchmark past-state reads (``GET …?at_seq=N``) against the event loop (not a test).

One process, a MemoryStore, one draft of ``--events`` segments of about 2 KB. ``--burst``
concurrent cold ``state_at`` folds (distinct seqs, highest first, so none starts from another's
result) while a ticker sleeps 1 ms in a loop: the ticker's longest gap is how long anything else
on the loop (a socket's delivery, a revocation, ``/healthz``) could have waited. Three ways:

* ``one go``: every fold from seq 1, no yield, no bound (what the server did before);
* ``chunked``: ``DraftProjector.state_at`` as shipped (one cold fold at a time, a yield to the
  loop every ``FOLD_CHUNK`` events);
* ``thread``: one cold fold at a time, the whole fold in a worker thread (``asyncio.to_thread``).

    python scripts/bench_at_seq.py [--events 12000] [--burst 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import orjson

from eventstore.memory import MemoryStore
from projections import AppendSegment, Command, CreateDraft, decide
from projections.fold import LogFolder
from projections.runner import DraftProjector
from projections.state import DraftState

CONTENT = "segment text ✍ " * 130


async def _draft(events: int) -> tuple[MemoryStore, DraftProjector, int]:
    store = MemoryStore()
    projector = DraftProjector(store, flush_interval=0)
    await projector.start()
    commands: list[Command] = [CreateDraft("alice", "d", "T")]
    commands += [AppendSegment("alice", CONTENT)] * events
    for i, command in enumerate(commands):
        state = await projector.get("d")
        now = f"2026-11-30T05:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}Z"
        await store.append("d", decide(state, command, now), state.seq if state is not None else 0)
    return store, projector, projector.known_head("d")


def _fold_bodies(bodies: list[bytes]) -> DraftState | None:
    folder = LogFolder()
    for body in bodies:
        folder.add_envelope(orjson.loads(body))
    return folder.states().get("d")


async def _bodies(store: MemoryStore, seq: int) -> list[bytes]:
    return [b for _, b in await store.read_stream_bodies("d", 0, seq)]


async def _measure(
    fold: Callable[[int], Awaitable[object]], head: int, burst: int
) -> tuple[float, float, float]:
    """(longest ticker gap, median gap, burst wall time), all in ms."""
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            t = time.perf_counter()
            gaps.append(t - last)
            last = t

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    start = time.perf_counter()
    await asyncio.gather(*(fold(head - 1 - i) for i in range(burst)))
    wall = time.perf_counter() - start
    stop.set()
    await tick
    return max(gaps) * 1000, statistics.median(gaps) * 1000, wall * 1000


async def main(events: int, burst: int) -> None:
    store, projector, head = await _draft(events)
    one_lock = asyncio.Semaphore(1)

    async def one_go(seq: int) -> object:
        return _fold_bodies(await _bodies(store, seq))

    async def chunked(seq: int) -> object:
        return await projector.state_at("d", seq)

    async def thread(seq: int) -> object:
        async with one_lock:
            bodies = await _bodies(store, seq)
            return await asyncio.to_thread(_fold_bodies, bodies)

    print(f"{events:,} segments of ~2 KB, {burst} concurrent cold folds")
    print("| way | longest loop gap (ms) | median gap (ms) | burst done (ms) |")
    print("|---|---:|---:|---:|")
    for name, fold in (
        ("one go (before)", one_go),
        ("chunked, 1 at a time", chunked),
        ("thread, 1 at a time", thread),
    ):
        projector.past = type(projector.past)()  # cold every way
        worst, median, wall = await _measure(fold, head, burst)
        print(f"| {name} | {worst:,.0f} | {median:.1f} | {wall:,.0f} |")
    await projector.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=12_000)
    parser.add_argument("--burst", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.burst))
