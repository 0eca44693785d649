"""The caller's own feed (API.md v2) through the Python client: ``RinglogClient.my_events`` (REST
long-poll) and ``RinglogSocket.feed`` (``subscribe_me``), against the real app in process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from ringlog import ApiError, RinglogClient, RinglogSocket
from server.feed_subscription import FeedSubscription
from server.state import AppState
from tests.client.sockets import TIMEOUT, api_and_socket, fast_backoff, take
from tests.server.wsclient import serving_app


@pytest.fixture
async def served() -> AsyncIterator[tuple[TestServer, str]]:
    async with serving_app() as (server, _store):
        yield server, str(server.make_url("")).rstrip("/")


async def test_my_events_pages_resumes_and_long_polls(served: tuple[TestServer, str]) -> None:
    _server, url = served
    async with RinglogClient(url, user_id="alice") as alice, RinglogClient(url, user_id="bob") as bob:
        draft = await alice.create_draft("For bob")
        await alice.append_segment(draft.id, "segments concern nobody")
        await alice.add_collaborator(draft.id, "bob", "contributor")
        items, last = await bob.my_events()
        assert [(i.event.type, i.event.draft_id) for i in items] == [("collab.collaborator_added", draft.id)]
        assert last >= items[-1].position
        mine, _ = await alice.my_events(after=0, limit=10)
        assert [i.event.type for i in mine] == ["collab.draft_created"]
        waiting = asyncio.ensure_future(bob.my_events(after=last, wait=15))
        await asyncio.sleep(0.1)  # the long-poll is parked (if not, it still must answer the pass)
        await alice.pass_ring(draft.id, "bob")
        items, last2 = await asyncio.wait_for(waiting, TIMEOUT)
        assert [i.event.type for i in items] == ["collab.ring_passed"] and last2 > last
        assert items[0].position > last
        empty, last3 = await bob.my_events(after=last2)
        assert empty == [] and last3 >= last2
        with pytest.raises(ApiError) as err:
            await bob.my_events(after=-1)
        assert (err.value.status, err.value.code) == (400, "invalid_parameter")


async def test_the_feed_on_the_socket_resumes_after_1013_without_gap_or_repeat(
    served: tuple[TestServer, str],
) -> None:
    server, url = served
    async with api_and_socket(url, socket_user="bob", backoff=fast_backoff()) as (alice, sock):
        feed = await sock.feed(after=0)
        drafts = [(await alice.create_draft(f"D{i}")).id for i in range(4)]
        await alice.add_collaborator(drafts[0], "bob", "contributor")
        first = await take(feed, 1)
        assert first[0].event.type == "collab.collaborator_added"
        for d in drafts[1:]:
            await alice.add_collaborator(d, "bob", "viewer")
            closers = list(server.app[AppState.KEY].sockets.all.values())
            await asyncio.gather(*(close(1013, b"test") for close in closers))
        more = await take(feed, 3)
        items = first + more
        assert [i.event.draft_id for i in items] == drafts
        positions = [i.position for i in items]
        assert positions == sorted(set(positions))
        assert sock.connections >= 2 and feed.last_position == positions[-1]
        # from now: a second socket's feed without `after` sees only what comes next
        async with RinglogSocket(url, user_id="bob") as other:
            now = await other.feed()
            for _ in range(100):  # bounded: subscribed_me arrives within a few turns
                if now.status == "live":
                    break
                await asyncio.sleep(0.05)
            await alice.pass_ring(drafts[0], "bob")
            (passed,) = await take(now, 1)
            assert passed.event.type == "collab.ring_passed" and passed.position > positions[-1]
            with pytest.raises(ValueError):
                await other.feed()  # one feed per socket


async def test_a_feed_consumer_that_falls_behind_catches_up(served: tuple[TestServer, str]) -> None:
    _server, url = served
    async with (
        RinglogClient(url, user_id="alice") as alice,
        RinglogClient(url, user_id="bob") as bob,
        RinglogSocket(url, user_id="bob", queue_size=2) as sock,
    ):
        feed = await sock.feed(after=0)
        drafts = [(await alice.create_draft(f"D{i}")).id for i in range(8)]
        for d in drafts:
            await alice.add_collaborator(d, "bob", "viewer")
        items, _last = await bob.my_events()  # what the feed holds
        for _ in range(100):  # bounded: until the queue of 2 overflowed
            if feed.status == "behind":
                break
            await asyncio.sleep(0.05)
        assert feed.status == "behind"
        got = await take(feed, 8)
        assert [i.event.draft_id for i in got] == drafts
        assert [i.position for i in got] == [i.position for i in items]
        assert sock.connections == 1


async def test_a_feed_the_server_ends_for_now_is_subscribed_again(
    served: tuple[TestServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _server, url = served
    real_catch_up = FeedSubscription.catch_up
    failures = {"left": 1}

    async def failing_once(self: FeedSubscription) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError("the index could not be read")
        await real_catch_up(self)

    monkeypatch.setattr(FeedSubscription, "catch_up", failing_once)
    errors: list[dict[str, Any]] = []
    async with api_and_socket(url, socket_user="bob", on_error=errors.append) as (alice, sock):
        draft = (await alice.create_draft("D")).id
        await alice.add_collaborator(draft, "bob", "viewer")
        feed = await sock.feed(after=0)  # answered subscribed_me, then "unavailable"
        (item,) = await take(feed, 1)
        assert item.event.type == "collab.collaborator_added" and failures["left"] == 0
        assert feed.status == "live" and sock.connections == 1 and errors == []
