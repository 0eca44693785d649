"""``GET /v1/me/events`` in process: contents, paging, resuming, long-poll, refusals (API.md v2)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from server.state import AppState
from tests.server.inprocess import InProcess, running_app


async def _feed(srv: InProcess, user: str | None, query: str = "") -> tuple[int, Any]:
    status, body, _ = await srv.call("GET", f"/v1/me/events?{query}", user)
    return status, body


async def _story(srv: InProcess) -> str:
    """alice creates, adds bob (contributor) and carol (viewer), passes to bob, renames, removes carol."""
    d = await srv.create("alice", "Our story")
    for who, role in (("bob", "contributor"), ("carol", "viewer")):
        status, body, _ = await srv.call(
            "POST", f"/v1/collab/drafts/{d}/collaborators", "alice", {"user_id": who, "role": role}
        )
        assert status == 201, body
    await srv.append(d, "first words")
    status, body, _ = await srv.call(
        "POST", f"/v1/collab/drafts/{d}/ring/pass", "alice", {"to_user_id": "bob"}
    )
    assert status == 200, body
    status, body, _ = await srv.call("PATCH", f"/v1/collab/drafts/{d}", "bob", {"title": "Better"})
    assert status == 200, body
    status, body, _ = await srv.call("DELETE", f"/v1/collab/drafts/{d}/collaborators/carol", "alice")
    assert status == 200, body
    return d


def _types(body: Any) -> list[str]:
    return [row["event"]["type"] for row in body["data"]]


async def test_the_feed_holds_exactly_the_events_that_concern_the_caller() -> None:
    async with running_app() as srv:
        d = await _story(srv)
        status, alice = await _feed(srv, "alice")
        assert status == 200
        assert _types(alice) == ["collab.draft_created", "collab.draft_updated"]
        _, bob = await _feed(srv, "bob")
        assert _types(bob) == ["collab.collaborator_added", "collab.ring_passed", "collab.draft_updated"]
        _, carol = await _feed(srv, "carol")
        # carol could view at the rename; the removal names her
        assert _types(carol) == [
            "collab.collaborator_added",
            "collab.draft_updated",
            "collab.collaborator_removed",
        ]
        _, dave = await _feed(srv, "dave")
        assert dave == {"data": [], "last_position": dave["last_position"]}
        for body in (alice, bob, carol):
            positions = [row["position"] for row in body["data"]]
            assert positions == sorted(set(positions))
            assert all(row["event"]["draft_id"] == d for row in body["data"])
            assert body["last_position"] == await srv.store.last_position()


async def test_paging_by_after_and_limit_resumes_without_gap_or_repeat() -> None:
    async with running_app() as srv:
        for k in range(7):
            await srv.create("alice", f"draft {k}")
        _, whole = await _feed(srv, "alice")
        seen: list[int] = []
        after = 0
        for _ in range(10):
            status, page = await _feed(srv, "alice", f"after={after}&limit=3")
            assert status == 200 and len(page["data"]) <= 3
            seen += [row["position"] for row in page["data"]]
            if not page["data"]:
                break
            after = page["last_position"]
        assert seen == [row["position"] for row in whole["data"]] and len(seen) == 7
        status, rest = await _feed(srv, "alice", f"after={seen[3]}")
        assert [row["position"] for row in rest["data"]] == seen[4:]


@pytest.mark.parametrize(
    "query",
    [
        "after=-1",
        "after=abc",
        "after=1.5",
        "after=%D9%A3",  # an Arabic-Indic digit
        "after=" + "9" * 40,
        "after=4611686018427387905",  # MAX_SEQ + 1
        "limit=0",
        "limit=1001",
        "limit=x",
        "wait=31",
        "wait=-1",
        "wait=nan",
        "after=1&after=2",
        "limit=1&limit=2",
        "wait=1&wait=1",
    ],
)
async def test_bad_parameters_are_400_invalid_parameter(query: str) -> None:
    async with running_app() as srv:
        status, body = await _feed(srv, "alice", query)
    assert status == 400, body
    assert body["error"]["code"] == "invalid_parameter"


async def test_no_credentials_is_401() -> None:
    async with running_app() as srv:
        status, body = await _feed(srv, None)
    assert status == 401 and body["error"]["code"] == "unauthorized"


async def _listening(srv: InProcess, user: str) -> None:
    feed = srv.state.feed
    for _ in range(2000):
        if user in feed._listeners:  # the long-poll has registered
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the long-poll never started waiting")


async def test_a_long_poll_wakes_on_a_concerning_event_and_not_on_another() -> None:
    async with running_app() as srv:
        d = await srv.create("alice")
        after = await srv.store.last_position()
        loop = asyncio.get_running_loop()
        started = loop.time()
        poll = asyncio.create_task(_feed(srv, "bob", f"after={after}&wait=20"))
        await _listening(srv, "bob")
        await srv.append(d, "not for bob")  # a segment concerns nobody
        await srv.create("alice", "not bob's either")
        await srv.state.feed.reached(await srv.store.last_position(), 10)
        await asyncio.sleep(0)
        assert not poll.done(), "an unrelated event ended bob's long-poll"
        status, body, _ = await srv.call(
            "POST", f"/v1/collab/drafts/{d}/collaborators", "alice", {"user_id": "bob", "role": "viewer"}
        )
        assert status == 201, body
        status, got = await asyncio.wait_for(poll, 10)
        assert loop.time() - started < 15
    assert status == 200
    assert _types(got) == ["collab.collaborator_added"]
    assert got["last_position"] >= got["data"][0]["position"] > after


async def test_a_long_poll_returns_empty_at_its_timeout() -> None:
    async with running_app() as srv:
        await srv.create("alice")
        last = await srv.store.last_position()
        status, body = await _feed(srv, "bob", f"after={last}&wait=0.05")
    assert status == 200 and body == {"data": [], "last_position": last}


async def test_shutting_down_ends_a_long_poll() -> None:
    async with running_app() as srv:
        poll = asyncio.create_task(_feed(srv, "bob", "wait=30"))
        await _listening(srv, "bob")
        srv.app[AppState.KEY].stopping.set()
        status, body = await asyncio.wait_for(poll, 10)
    assert status == 200 and body["data"] == []


async def test_the_caller_reads_their_own_write_at_once() -> None:
    async with running_app() as srv:
        for k in range(20):
            d = await srv.create("alice", f"t{k}")
            _, body = await _feed(srv, "alice", f"after={await srv.store.last_position() - 1}")
            assert [row["event"]["draft_id"] for row in body["data"]] == [d]


async def test_metrics_report_the_feed_index_lag() -> None:
    async with running_app() as srv:
        await srv.create("alice")
        assert await srv.state.feed.reached(await srv.store.last_position(), 10)
        async with srv.client.get("/metrics") as r:
            text = await r.text()
    assert "ringlog_feed_index_lag_positions 0.0" in text
