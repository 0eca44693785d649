"""Revocation decided by the subscriber from the events it forwards (API.md v2 "Revocation is
live"), in-process: a MemoryStore, fake sinks, the real hub. Every path an event reaches a socket
by — live, a catch-up page, the live batches merged at the switch to live, a slow socket's
backlog — stops right after the removal and asks for 4403; others are untouched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest

from eventstore.memory import MemoryStore
from projections.access import ViewAccess
from projections.decide import (
    AddCollaborator,
    AppendSegment,
    ChangeRole,
    Command,
    CreateDraft,
    PassRing,
    RemoveCollaborator,
    decide,
)
from projections.fold import fold_all
from projections.state import DraftState
from server.hub import Hub
from server.subscriber import CATCH_UP_PAGE, CLOSE_ACCESS_REVOKED, Subscriber
from tests.server.fakes import FakeSink, decode_frames

DRAFT = "draft_" + "a" * 20
TS = "2025-12-23T20:30:45.123Z"


class Owner:
    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.closes: list[tuple[int, bytes]] = []
        self.closed = asyncio.Event()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def request_close(self, code: int, reason: bytes) -> None:
        self.closes.append((code, reason))
        self.closed.set()

    async def idle(self) -> None:
        while self.tasks:
            await asyncio.gather(*self.tasks)


class Log:
    """Commands decided against the current state and appended: the server's write path, bare."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.state: DraftState | None = None

    async def run(self, command: Command) -> None:
        events = decide(self.state, command, TS)
        result = await self.store.append(DRAFT, events, self.state.seq if self.state else 0)
        self.state = fold_all(self.state, [r.event() for r in result.records])


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    await s.open()
    yield s
    await s.close()


async def team(store: MemoryStore, segments: int = 3) -> Log:
    log = Log(store)
    await log.run(CreateDraft("alice", DRAFT, "T"))
    await log.run(AddCollaborator("alice", "bob", "contributor"))
    await log.run(AddCollaborator("alice", "vera", "viewer"))
    for i in range(segments):
        await log.run(AppendSegment("alice", f"s{i}"))
    await log.run(PassRing("alice", "bob"))
    return log


def hub_of(store: MemoryStore) -> Hub:
    return Hub(store, max_backlog_bytes=1 << 20, max_backlog_events=10_000)


def watch(hub: Hub, owner: Owner, sink: FakeSink, log: Log, user: str, since: int) -> Subscriber:
    assert log.state is not None
    access = ViewAccess(log.state, user)
    return hub.subscribe(
        DRAFT, sink, since, spawn=owner.spawn, request_close=owner.request_close, access=access
    )


def types(sink: FakeSink) -> list[tuple[int, object]]:
    return [(e["seq"], e["type"]) for e in decode_frames(bytes(sink.sent))]


async def test_live_removal_ends_delivery_at_the_removal_and_asks_4403(store: MemoryStore) -> None:
    log = await team(store)
    head = log.state.seq if log.state else 0
    hub = hub_of(store)
    bob, bob_owner = FakeSink(), Owner()
    vera, vera_owner = FakeSink(), Owner()
    watch(hub, bob_owner, bob, log, "bob", head)
    watch(hub, vera_owner, vera, log, "vera", head)
    await bob_owner.idle()
    await vera_owner.idle()
    await log.run(RemoveCollaborator("alice", "bob"))  # bob holds the ring: two events
    await asyncio.wait_for(bob_owner.closed.wait(), 1.0)
    assert types(bob) == [(head + 1, "collab.collaborator_removed")]  # not the ring_passed after it
    assert bob_owner.closes == [(CLOSE_ACCESS_REVOKED, b"access_revoked")]
    assert types(vera) == [(head + 1, "collab.collaborator_removed"), (head + 2, "collab.ring_passed")]
    assert vera_owner.closes == []
    await log.run(AppendSegment("alice", "after"))
    assert [s for s, _ in types(vera)][-1] == head + 3 and len(types(bob)) == 1


async def test_demotion_and_other_removals_close_nothing(store: MemoryStore) -> None:
    log = await team(store)
    head = log.state.seq if log.state else 0
    hub = hub_of(store)
    bob, owner = FakeSink(), Owner()
    watch(hub, owner, bob, log, "bob", head)
    await owner.idle()
    await log.run(ChangeRole("alice", "bob", "viewer"))
    await log.run(RemoveCollaborator("alice", "vera"))
    await log.run(AppendSegment("alice", "still here"))
    await bob.wait_until(lambda: len(types(bob)) == 4)
    assert owner.closes == []


async def test_removal_found_in_a_catch_up_page(store: MemoryStore) -> None:
    log = await team(store)
    admitted = log.state
    assert admitted is not None
    await log.run(RemoveCollaborator("bob", "bob"))  # bob leaves, ring returns
    await log.run(AppendSegment("alice", "later"))
    hub = hub_of(store)
    sink, owner = FakeSink(), Owner()
    # admitted before the removal (as a socket whose admission raced it), catching up from 2
    hub.subscribe(
        DRAFT,
        sink,
        2,
        spawn=owner.spawn,
        request_close=owner.request_close,
        access=ViewAccess(admitted, "bob"),
    )
    await asyncio.wait_for(owner.closed.wait(), 1.0)
    assert [s for s, _ in types(sink)] == list(range(3, admitted.seq + 2))
    assert types(sink)[-1] == (admitted.seq + 1, "collab.collaborator_removed")


async def test_removal_and_readmission_before_admission_do_not_revoke(store: MemoryStore) -> None:
    log = await team(store)
    await log.run(RemoveCollaborator("alice", "vera"))
    await log.run(AddCollaborator("alice", "vera", "viewer"))
    hub = hub_of(store)
    sink, owner = FakeSink(), Owner()
    watch(hub, owner, sink, log, "vera", 0)  # the catch-up forwards the old removal
    assert log.state is not None
    head = log.state.seq
    await sink.wait_until(lambda: len(types(sink)) == head)
    await owner.idle()
    assert owner.closes == []


async def test_removal_merged_at_the_switch_to_live(store: MemoryStore) -> None:
    log = await team(store)
    assert log.state is not None
    admitted = log.state
    hub = hub_of(store)
    read = hub.read_page
    removed = False

    async def read_then_remove(stream_id: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        nonlocal removed
        page = await read(stream_id, after, limit)
        if not removed:
            removed = True  # committed after the last read, before the switch: only in the buffer
            await log.run(RemoveCollaborator("alice", "bob"))
            await log.run(AppendSegment("alice", "after"))
        return page

    hub.read_page = read_then_remove
    sink, owner = FakeSink(), Owner()
    watch(hub, owner, sink, log, "bob", 4)
    await asyncio.wait_for(owner.closed.wait(), 1.0)
    assert types(sink)[-1] == (admitted.seq + 1, "collab.collaborator_removed")
    assert [s for s, _ in types(sink)] == list(range(5, admitted.seq + 2))


async def test_a_slow_socket_gets_its_backlog_then_the_removal_then_4403(store: MemoryStore) -> None:
    log = await team(store)
    assert log.state is not None
    head = log.state.seq
    hub = hub_of(store)
    sink, owner = FakeSink(auto_drain=False), Owner()
    sub = watch(hub, owner, sink, log, "bob", head)
    await owner.idle()
    for i in range(40):
        await log.run(AppendSegment("bob", "x" * 9_990 + str(i)))  # beyond HIGH_WATER: a backlog
    await log.run(RemoveCollaborator("alice", "bob"))
    assert sub.backlog_bytes > 0 and owner.closes == []  # not before the removal is in the sink
    while not owner.closes:
        sink.drain()
        await asyncio.sleep(0)
    sink.drain()
    assert [s for s, _ in types(sink)] == list(range(head + 1, head + 42))
    assert types(sink)[-1][1] == "collab.collaborator_removed"
    assert owner.closes == [(CLOSE_ACCESS_REVOKED, b"access_revoked")]


async def test_a_kept_page_holding_a_removal_is_read_again_by_a_socket_that_folds_removals(
    store: MemoryStore,
) -> None:
    """Pages kept by one socket's catch-up (server.pages) serve a removed user's catch-up up to
    the page with the removal, which is read from the log: delivery still ends at the removal."""
    log = await team(store, segments=CATCH_UP_PAGE + 200)
    admitted = log.state
    assert admitted is not None
    await log.run(RemoveCollaborator("alice", "bob"))
    for i in range(CATCH_UP_PAGE):
        await log.run(AppendSegment("alice", f"after {i}"))
    hub = Hub(store, max_backlog_bytes=1 << 20, max_backlog_events=10_000, page_cache_bytes=64 << 20)
    alice, alice_owner = FakeSink(), Owner()
    watch(hub, alice_owner, alice, log, "alice", 0)
    await alice_owner.idle()
    removal = next(seq for seq, kind in types(alice) if kind == "collab.collaborator_removed")
    assert hub.pages is not None and len(hub.pages) == 2  # seqs 1-1000 and 1001-2000
    kept = hub.pages.get(DRAFT, CATCH_UP_PAGE)
    assert kept is not None and kept.has_removal and CATCH_UP_PAGE < removal <= kept.last_seq
    bob, bob_owner = FakeSink(), Owner()
    hub.subscribe(
        DRAFT,
        bob,
        0,
        spawn=bob_owner.spawn,
        request_close=bob_owner.request_close,
        access=ViewAccess(admitted, "bob"),
    )
    await asyncio.wait_for(bob_owner.closed.wait(), 5.0)
    assert [s for s, _ in types(bob)] == list(range(1, removal + 1))
    assert bob_owner.closes == [(4403, b"access_revoked")]
