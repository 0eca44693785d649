"""``GET …/events?wait=`` in process: it returns when an append happens, and empty at its timeout."""

from __future__ import annotations

import asyncio

import pytest

from eventstore.memory import MemoryStore
from eventstore.notifier import Listener, Notifier
from server.state import AppState
from tests.server.inprocess import InProcess, running_app


class SignallingNotifier(Notifier):
    """A notifier that says when a per-draft listener (a long-poll) has been added."""

    def __init__(self) -> None:
        super().__init__()
        self.listening = asyncio.Event()

    def add_listener(self, draft_id: str, listener: Listener) -> None:
        super().add_listener(draft_id, listener)
        self.listening.set()


def _store() -> MemoryStore:
    store = MemoryStore()
    store.notifier = SignallingNotifier()
    return store


async def _poll(srv: InProcess, draft_id: str, query: str, user: str = "alice") -> tuple[int, object, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, body, _ = await srv.call("GET", f"/v1/collab/drafts/{draft_id}/events?{query}", user)
    return status, body, loop.time() - started


@pytest.mark.parametrize("appends", [1, 3])
async def test_a_long_poll_returns_when_an_append_happens(appends: int) -> None:
    store = _store()
    async with running_app(store) as srv:
        d = await srv.create()
        notifier = store.notifier
        assert isinstance(notifier, SignallingNotifier)
        notifier.listening.clear()
        poll = asyncio.create_task(_poll(srv, d, "since=1&wait=20"))
        await asyncio.wait_for(notifier.listening.wait(), 10)  # the poll is waiting now
        assert not poll.done()
        for k in range(appends):
            status, body, _ = await srv.append(d, f"s{k}")
            assert status == 201, body
        status, body, took = await asyncio.wait_for(poll, 10)
    assert status == 200
    assert isinstance(body, dict)
    assert body["data"][0]["seq"] == 2 and body["head_seq"] >= 2
    assert took < 10, "the long-poll waited for its timeout instead of the append"
    assert store.notifier.listener_count(d) == 0  # the poll's listener is gone


@pytest.mark.parametrize("wait", ["0.2", "0.5"])
async def test_a_long_poll_returns_empty_at_its_timeout(wait: str) -> None:
    async with running_app(_store()) as srv:
        d = await srv.create()
        status, body, took = await _poll(srv, d, f"since=1&wait={wait}")
        assert srv.store.notifier.listener_count(d) == 0
    assert status == 200 and body == {"data": [], "head_seq": 1}
    assert took >= float(wait) * 0.9


async def test_events_already_there_return_at_once() -> None:
    async with running_app(_store()) as srv:
        d = await srv.create()
        await srv.append(d, "one")
        status, body, took = await _poll(srv, d, "since=0&wait=30")
    assert status == 200 and isinstance(body, dict)
    assert [e["seq"] for e in body["data"]] == [1, 2] and body["head_seq"] == 2
    assert took < 5


async def test_an_append_to_another_draft_does_not_end_the_poll() -> None:
    store = _store()
    async with running_app(store) as srv:
        d, other = await srv.create(), await srv.create()
        notifier = store.notifier
        assert isinstance(notifier, SignallingNotifier)
        notifier.listening.clear()
        poll = asyncio.create_task(_poll(srv, d, "since=1&wait=0.5"))
        await asyncio.wait_for(notifier.listening.wait(), 10)
        status, _, _ = await srv.append(other, "elsewhere")
        assert status == 201
        status, body, took = await poll
    assert status == 200 and body == {"data": [], "head_seq": 1}
    assert took >= 0.45


async def test_shutting_down_ends_a_long_poll() -> None:
    store = _store()
    async with running_app(store) as srv:
        d = await srv.create()
        notifier = store.notifier
        assert isinstance(notifier, SignallingNotifier)
        notifier.listening.clear()
        poll = asyncio.create_task(_poll(srv, d, "since=1&wait=25"))
        await asyncio.wait_for(notifier.listening.wait(), 10)
        srv.app[AppState.KEY].stopping.set()
        status, body, took = await asyncio.wait_for(poll, 10)
    assert status == 200 and body == {"data": [], "head_seq": 1}
    assert took < 10


@pytest.mark.parametrize("user", ["mallory", None])
async def test_a_long_poll_is_refused_before_it_waits(user: str | None) -> None:
    async with running_app(_store()) as srv:
        d = await srv.create()
        status, body, took = await _poll(srv, d, "since=1&wait=20", user=user)  # type: ignore[arg-type]
    assert isinstance(body, dict)
    assert (status, body["error"]["code"]) == ((403, "forbidden") if user else (401, "unauthorized"))
    assert took < 5
