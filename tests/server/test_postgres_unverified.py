"""Appends decided on a node's cached state without reading the log's tail (two nodes, one database).

Node A never hears of node B's commits here (no LISTEN, no periodic check), so A's cached state
of the draft is behind the log whenever B appended: every answer A gives must still be the one
the log's current state gives (server/service.py ``_decide_and_append``: the store refuses an
append whose expected seq is not the head, and anything but an append is decided again on the
log's tail).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from eventstore.postgres import PostgresStore
from tests.pgutil import temporary_database
from tests.server.inprocess import InProcess, running_app

pytestmark = pytest.mark.postgres


@contextlib.asynccontextmanager
async def two_deaf_nodes() -> AsyncIterator[tuple[InProcess, InProcess]]:
    """Two in-process apps on one fresh database that never learn of each other's commits."""
    async with temporary_database() as url, contextlib.AsyncExitStack() as stack:
        nodes = []
        for _ in range(2):
            store = PostgresStore(url, 2, listen=False, poll_interval=0)
            await store.open()
            stack.push_async_callback(store.close)
            nodes.append(await stack.enter_async_context(running_app(store, db=url)))  # type: ignore[arg-type]
        yield nodes[0], nodes[1]


async def _events(srv: InProcess, d: str) -> list[dict[str, Any]]:
    status, body, _ = await srv.call("GET", f"/v1/collab/drafts/{d}/events?since=0", "alice")
    assert status == 200, body
    events: list[dict[str, Any]] = body["data"]
    return events


async def test_an_append_on_a_stale_cache_lands_after_the_other_nodes_append() -> None:
    async with two_deaf_nodes() as (a, b):
        d = await a.create("alice")
        status, body, _ = await a.append(d, "from a")  # a caches the draft at seq 2
        assert status == 201, body
        status, body, _ = await b.append(d, "from b")
        assert (status, body["data"]["seq"]) == (201, 3), body
        status, body, _ = await a.append(d, "from a again")  # a's cache says seq 2
        assert (status, body["data"]["seq"]) == (201, 4), body
        status, body, _ = await a.call("GET", f"/v1/collab/drafts/{d}", "alice")
        assert status == 200 and body["data"]["seq"] == 4, body
        assert [e["seq"] for e in await _events(b, d)] == [1, 2, 3, 4]


async def test_if_match_is_checked_against_the_log_not_the_stale_cache() -> None:
    async with two_deaf_nodes() as (a, b):
        d = await a.create("alice")
        assert (await a.append(d, "from a"))[0] == 201  # a caches seq 2
        assert (await b.append(d, "from b"))[0] == 201  # the head is 3
        status, body, _ = await a.append(d, "matches the head", headers={"If-Match": '"2"'})
        assert status == 412, body  # a's cache is at 2, the log is at 3
        assert body["error"]["code"] == "precondition_failed", body
        status, body, _ = await a.append(d, "matches the head", headers={"If-Match": '"3"'})
        assert (status, body["data"]["seq"]) == (201, 4), body
        assert [e["seq"] for e in await _events(a, d)] == [1, 2, 3, 4]


async def test_a_refusal_the_stale_cache_would_give_is_decided_again_on_the_log() -> None:
    async with two_deaf_nodes() as (a, b):
        d = await a.create("alice")
        assert (await a.append(d, "from a"))[0] == 201  # a caches the draft: carl is no member
        status, body, _ = await b.call(
            "POST",
            f"/v1/collab/drafts/{d}/collaborators",
            "alice",
            {"user_id": "carl", "role": "contributor"},
        )
        assert status == 201, body
        status, body, _ = await b.call(
            "POST", f"/v1/collab/drafts/{d}/ring/pass", "alice", {"to_user_id": "carl"}
        )
        assert status == 200, body
        status, body, _ = await a.append(d, "carl writes", user="carl")
        assert status == 201, body  # on a's cache carl may not write; on the log he holds the ring
        status, body, _ = await a.append(d, "alice no longer holds the ring")
        assert status in (403, 409), body  # and the refusal the log's state gives stands
        events = await _events(b, d)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
