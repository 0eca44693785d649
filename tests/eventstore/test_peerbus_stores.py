"""The peer bus on real stores: two SQLite stores on one file, two PostgreSQL stores on one database.

Each store is what one ``ringlog serve`` process holds; the bus must carry messages between them,
make a joining store announce, drop a closed store at once, and survive garbage without losing
the commit wake-ups that share its channel.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from eventstore.peerbus import PeerBus
from eventstore.postgres import PostgresStore
from eventstore.sqlite import SQLiteStore
from tests.eventstore.helpers import created
from tests.pgutil import temporary_database

WAIT = 10.0

OpenPair = Callable[
    [], "asynccontextmanager[tuple[SQLiteStore | PostgresStore, SQLiteStore | PostgresStore]]"
]


@asynccontextmanager
async def _sqlite_pair(path: Path) -> AsyncIterator[tuple[SQLiteStore, SQLiteStore]]:
    a = SQLiteStore(path, synchronous="NORMAL", shared=True, poll_interval=30.0)
    b = SQLiteStore(path, synchronous="NORMAL", shared=True, poll_interval=30.0)
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


@asynccontextmanager
async def _pg_pair() -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    async with temporary_database() as url:
        a = PostgresStore(url, pool_size=2, poll_interval=30.0)
        b = PostgresStore(url, pool_size=2, poll_interval=30.0)
        await a.open()
        await b.open()
        try:
            assert await a.wait_listening(WAIT) and await b.wait_listening(WAIT)
            yield a, b
        finally:
            await a.close()
            await b.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def pair(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[SQLiteStore | PostgresStore, SQLiteStore | PostgresStore]]:
    if request.param == "sqlite":
        async with _sqlite_pair(tmp_path / "log.db") as stores:
            yield stores
    else:
        async with _pg_pair() as stores:
            yield stores


class Inbox:
    def __init__(self, bus: PeerBus, topic: str) -> None:
        self.got: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()
        bus.subscribe(topic, self._take)

    def _take(self, node_id: str, payload: bytes) -> None:
        self.got.append((node_id, payload))
        self._changed.set()

    async def reach(self, count: int) -> None:
        async def wait() -> None:
            while len(self.got) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), WAIT)


async def _until(predicate: Callable[[], bool]) -> None:
    async def wait() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), WAIT)


async def test_messages_cross_in_order_both_ways(
    pair: tuple[SQLiteStore | PostgresStore, SQLiteStore | PostgresStore],
) -> None:
    a, b = pair
    at_a, at_b = Inbox(a.peer_bus, "t"), Inbox(b.peer_bus, "t")
    big = bytes(range(256)) * 16  # 4 KiB, every byte value
    for i in range(20):
        a.peer_bus.publish("t", b"%d" % i)
    a.peer_bus.publish("t", big)
    b.peer_bus.publish("t", b"from b")
    await at_b.reach(21)
    await at_a.reach(1)
    assert at_b.got == [(a.peer_bus.node_id, b"%d" % i) for i in range(20)] + [(a.peer_bus.node_id, big)]
    assert at_a.got == [(b.peer_bus.node_id, b"from b")]


async def test_a_joining_store_is_announced_to_and_a_closing_one_is_dropped(
    pair: tuple[SQLiteStore | PostgresStore, SQLiteStore | PostgresStore],
) -> None:
    a, b = pair
    await _until(lambda: b.peer_bus.node_id in a.peer_bus.live_nodes())
    announced = asyncio.Event()
    a.peer_bus.on_announce(announced.set)
    b.peer_bus.hello()  # what a (re)joining store sends
    await asyncio.wait_for(announced.wait(), WAIT)
    expired: list[str] = []
    a.peer_bus.on_node_expired(expired.append)
    await b.close()  # says goodbye
    await _until(lambda: expired == [b.peer_bus.node_id])
    assert a.peer_bus.live_nodes() == []


async def test_garbage_on_the_sqlite_channel_is_dropped_and_wake_ups_still_work(tmp_path: Path) -> None:
    async with _sqlite_pair(tmp_path / "log.db") as (a, b):
        seen = []
        b.notifier.add_global_listener(seen.extend)
        receiver = b._wakeups
        assert receiver is not None
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as forger:
            to = receiver.bus_address(receiver.marker)
            forger.sendto(b"RLBD\xff\xff garbage", to)  # a length past the end
            forger.sendto(b"RLBD\x00\x04RLB1", to)  # a well-formed batch of one garbled frame
            forger.sendto(b"\x00" * 70_000, to)  # too big, not a batch
        await _until(lambda: b.peer_bus.bad_frames == 3)
        # poll_interval is 30 s: only a wake-up makes b see a's commit this soon
        await a.append("d1", [created()], 0)
        await _until(lambda: len(seen) == 1)


async def test_garbage_on_the_postgres_channel_is_dropped() -> None:
    async with _pg_pair() as (a, b):
        inbox = Inbox(b.peer_bus, "t")
        pool = a._pool
        assert pool is not None
        async with pool.acquire() as conn:
            await conn.execute("SELECT pg_notify('ringlog_peers', 'not base64 !!')")
            await conn.execute("SELECT pg_notify('ringlog_peers', 'UkxCMQ==')")  # "RLB1"
        a.peer_bus.publish("t", b"after")
        await inbox.reach(1)
        assert b.peer_bus.bad_frames == 2
