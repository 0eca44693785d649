"""Two PostgresStores on one database, as two nodes use it: snapshot writes must not collide."""

from __future__ import annotations

import asyncio

import pytest

from eventstore.events import Snapshot
from eventstore.postgres import PostgresStore
from tests.pgutil import temporary_database

pytestmark = pytest.mark.postgres


async def test_two_nodes_saving_the_same_snapshots_in_opposite_orders_never_deadlock() -> None:
    # each node flushes its dirty drafts in its own (hash-seeded set) order
    async with temporary_database() as url:
        nodes = [PostgresStore(url, 2, listen=False, poll_interval=0) for _ in range(2)]
        for node in nodes:
            await node.open()
        try:
            for round_ in range(1, 16):
                snaps = [Snapshot(f"draft_{i:03d}", round_, b'{"r": %d}' % round_) for i in range(200)]
                outcomes = await asyncio.gather(
                    nodes[0].save_snapshots(snaps, round_),
                    nodes[1].save_snapshots(snaps[::-1], round_),
                    return_exceptions=True,
                )
                assert list(outcomes) == [None, None], outcomes
            saved = await nodes[1].list_snapshots("", 1000)
            assert [(s.stream_id, s.seq) for s in saved] == [(f"draft_{i:03d}", 15) for i in range(200)]
            assert await nodes[0].snapshot_checkpoint() == 15
        finally:
            for node in nodes:
                await node.close()
