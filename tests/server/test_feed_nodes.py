"""The feed across processes sharing one log: two apps on one SQLite file, two PostgreSQL nodes.

Each app has its own store object (as two workers or two nodes have), so node B learns of node
A's commits only by commit discovery; a feed read on B must see an event appended on A, and the
index written by both stays exactly the scan of the log.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventstore import Store
from eventstore.postgres import PostgresStore
from eventstore.sqlite import SQLiteStore
from tests.pgutil import temporary_database
from tests.projections.feedlog import brute_force_feed
from tests.server.inprocess import InProcess, running_app


@contextlib.asynccontextmanager
async def _two_nodes(kind: str, tmp_path: Path) -> AsyncIterator[tuple[InProcess, InProcess]]:
    async with contextlib.AsyncExitStack() as stack:
        stores: list[Store]
        if kind == "sqlite":
            path = str(tmp_path / "shared.db")
            stores = [SQLiteStore(path, shared=True, poll_interval=0.2) for _ in range(2)]
        else:
            url = await stack.enter_async_context(temporary_database())
            stores = [PostgresStore(url, 2) for _ in range(2)]
        a = await stack.enter_async_context(running_app(stores[0]))  # type: ignore[arg-type]
        b = await stack.enter_async_context(running_app(stores[1]))  # type: ignore[arg-type]
        yield a, b


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_feed_read_on_one_node_sees_an_append_on_the_other(kind: str, tmp_path: Path) -> None:
    async with _two_nodes(kind, tmp_path) as (a, b):
        d = await a.create("alice", "on A")
        status, body, _ = await a.call(
            "POST", f"/v1/collab/drafts/{d}/collaborators", "alice", {"user_id": "bob", "role": "viewer"}
        )
        assert status == 201, body
        got: list[str] = []
        after = 0
        for _ in range(20):  # a long-poll on B returns when B has indexed A's commit (or times out)
            status, page, _ = await b.call("GET", f"/v1/me/events?after={after}&wait=5", "bob")
            assert status == 200, page
            got += [row["event"]["type"] for row in page["data"]]
            after = page["last_position"]
            if got:
                break
        assert got == ["collab.collaborator_added"]
        # both nodes keep folding; the index is written once per position and equals the scan
        for k in range(10):
            node = (a, b)[k % 2]
            await node.create("carol" if k % 3 else "dave", f"draft {k}")
        for node in (a, b):
            assert await node.state.feed.reached(await node.store.last_position(), 20)
        store = a.store
        upto = await store.last_position()
        index = {
            u: [p for p, _ in await store.feed_read(u, 0, upto, 1000)]
            for u in ("alice", "bob", "carol", "dave")
        }
        expected = await brute_force_feed(store)
        assert index == {u: expected.get(u, []) for u in index}
