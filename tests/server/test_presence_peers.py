"""Presence shared over the peer bus (server/presence_peers.py), on an in-memory network.

API.md v2 "Presence": a user present through any process is present on every process, once; a
dead process's users leave. Messages may be lost: announcements repair what was lost.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.presence import PresenceEvent, PresenceRegistry
from server.presence_peers import PRESENCE_TOPIC, PresenceReplicator
from tests.eventstore.test_peerbus import Clock, Network

DRAFT = "d1"
USERS = ("alice", "bob", "carol")


class Process:
    def __init__(self, net: Network, name: str, clock: Clock) -> None:
        self.bus = net.join(name)
        self.registry = PresenceRegistry(self.bus.node_id, clock=lambda: clock.now)
        self.replicator = PresenceReplicator(self.bus, self.registry)
        self.replicator.start()
        self.alive = True
        self.events: list[PresenceEvent] = []
        self.registry.add_observer(self.events.append)
        self.sockets: dict[str, set[int]] = {}

    def members(self) -> dict[str, Any]:
        return {m.user_id: m.state for m in self.registry.members(DRAFT)}


op = st.one_of(
    st.tuples(st.just("attach"), st.integers(0, 2), st.sampled_from(USERS), st.integers(0, 1)),
    st.tuples(st.just("detach"), st.integers(0, 2), st.sampled_from(USERS), st.integers(0, 1)),
    st.tuples(st.just("set"), st.integers(0, 2), st.sampled_from(USERS), st.integers(0, 3)),
    st.tuples(st.just("deliver"), st.none(), st.none(), st.none()),
    st.tuples(st.just("lose"), st.none(), st.none(), st.none()),
    st.tuples(st.just("tick"), st.integers(0, 2), st.none(), st.none()),
    st.tuples(st.just("kill"), st.integers(0, 2), st.none(), st.none()),
    # SIGKILL and the supervisor's new worker (a new node id) that the clients reconnect to
    st.tuples(st.just("restart"), st.integers(0, 2), st.none(), st.none()),
    # the user's last socket goes, its leave is lost, and the user rejoins the same process
    st.tuples(st.just("lost-leave"), st.integers(0, 2), st.sampled_from(USERS), st.integers(0, 1)),
)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(op, max_size=50))
def test_every_live_process_agrees_after_the_network_settles(ops: list[tuple[Any, ...]]) -> None:
    clock = Clock()
    net = Network(clock)
    procs = [Process(net, f"p{i}", clock) for i in range(3)]
    restarts = 0
    for name, index, user, arg in ops:
        proc = procs[index] if index is not None else None
        if proc is not None and not proc.alive:
            continue
        clock.now += 0.01
        if name == "attach" and proc:
            proc.registry.attach(DRAFT, user, arg)
            proc.sockets.setdefault(user, set()).add(arg)
        elif name == "detach" and proc:
            proc.registry.detach(DRAFT, user, arg)
            proc.sockets.get(user, set()).discard(arg)
        elif name == "set" and proc and proc.sockets.get(user):
            proc.registry.set_state(DRAFT, user, next(iter(proc.sockets[user])), {"n": arg})
        elif name == "deliver":
            net.deliver()
        elif name == "lose":
            net.in_flight.clear()
        elif name == "tick" and proc:
            clock.now += 0.5
            proc.bus.tick()
        elif name == "kill" and proc:
            proc.alive = False  # no goodbye; its frames in flight still arrive
            net.buses.remove(proc.bus)
        elif name == "restart" and proc:
            proc.alive = False
            net.buses.remove(proc.bus)
            restarts += 1
            new = procs[index] = Process(net, f"p{index}r{restarts}", clock)
            for u, socks in proc.sockets.items():  # each client reconnects: a fresh join, {}
                for sock in socks:
                    new.registry.attach(DRAFT, u, sock)
                new.sockets[u] = set(socks)
        elif name == "lost-leave" and proc:
            for sock in proc.sockets.pop(user, set()):
                proc.registry.detach(DRAFT, user, sock)
            net.in_flight.clear()  # the leave (and whatever else was in flight) is lost
            clock.now += 0.01
            proc.registry.attach(DRAFT, user, arg)  # ... and the user is back at once
            proc.sockets[user] = {arg}
    net.deliver()
    # heartbeats until the dead expired (3 s), the live ones hearing each other all along (a
    # jump past the expiry would expire everyone and hide a disagreement); after the last
    # expiry, one more announcement round
    for _ in range(5):
        clock.now += 1.0
        for proc in procs:
            if proc.alive:
                proc.bus.tick()
        net.deliver()  # raises if the adoptions do not settle (a message storm)
    live = [p for p in procs if p.alive]
    present = {u for p in live for u, socks in p.sockets.items() if socks}
    views = [p.members() for p in live]
    for view in views:
        assert set(view) == present
        assert view == views[0]  # the same state everywhere: the one set last
    for proc in live:  # observers saw one consistent story: no leave without a join
        shown: set[str] = set()
        for event in proc.events:
            if event.kind == "join":
                assert event.user_id not in shown
                shown.add(event.user_id)
            elif event.kind == "leave":
                assert event.user_id in shown
                shown.discard(event.user_id)
            else:
                assert event.user_id in shown
        assert shown == present


def test_a_lost_leave_is_repaired_by_the_next_announcement() -> None:
    clock = Clock()
    net = Network(clock)
    a, b = Process(net, "pa", clock), Process(net, "pb", clock)
    a.registry.attach(DRAFT, "alice", 1)
    a.registry.set_state(DRAFT, "alice", 1, {"typing": True})
    net.deliver()
    assert b.members() == {"alice": {"typing": True}}
    a.registry.detach(DRAFT, "alice", 1)
    net.in_flight.clear()  # the leave is lost
    assert b.members() == {"alice": {"typing": True}}
    a.bus.tick()
    net.deliver()
    assert b.members() == {}
    assert [e.kind for e in b.events] == ["join", "update", "leave"]


def test_a_dead_process_users_leave_unless_present_elsewhere() -> None:
    clock = Clock()
    net = Network(clock)
    a, b, c = (Process(net, f"p{n}", clock) for n in "abc")
    a.registry.attach(DRAFT, "alice", 1)
    a.registry.attach(DRAFT, "bob", 1)
    c.registry.attach(DRAFT, "bob", 1)
    net.deliver()
    assert set(b.members()) == {"alice", "bob"}
    net.buses.remove(a.bus)  # killed
    clock.now += 10.0
    c.bus.tick()
    net.deliver()
    b.bus.expire()
    assert set(b.members()) == {"bob"}


def test_garbled_messages_are_dropped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    net = Network(clock)
    a, b = Process(net, "pa", clock), Process(net, "pb", clock)
    bad = [
        b"not json",
        b"[]",
        b'{"k": "z", "e": []}',
        b'{"k": "c", "e": [["d1", "mallory"]]}',
        b'{"k": "c", "e": [["d1", "mallory", [1], 0, 0]]}',
        b'{"k": "c", "e": [["d1", "mallory", {"x": "' + b"y" * 600 + b'"}, 0, 0]]}',
        b'{"k": "c", "e": [["d1", "mallory", {}, "0", 0]]}',
        b'{"k": "a", "e": [], "s": "x", "i": 0, "n": 1}',
    ]
    with caplog.at_level(logging.WARNING, logger="server.presence_peers"):
        for payload in bad:
            a.bus.publish(PRESENCE_TOPIC, payload)
        a.registry.attach(DRAFT, "alice", 1)
        net.deliver()
    assert b.members() == {"alice": {}}  # the good message after them still applied
    assert len([r for r in caplog.records if "dropped" in r.getMessage()]) == len(bad)


@pytest.mark.parametrize("network", ["in order", "announcement lost", "reordered"])
def test_the_newest_state_is_shown_everywhere_whichever_sockets_close(network: str) -> None:
    """The fresh-user trial's sequence: bob's b1 on A sets v1, then b2 on B sets v2, then b2
    closes; B showed v1 (its copy of A's source) and alice on A later got an ``update`` back to
    v1. Whatever is lost or reordered, once every process heard v2 every process shows it, and
    no process tells of an ``update`` to an older state."""
    clock = Clock()
    net = Network(clock)
    a, b = Process(net, "pa", clock), Process(net, "pb", clock)
    a.registry.attach(DRAFT, "bob", 1)
    b.registry.attach(DRAFT, "bob", 2)
    net.deliver()
    clock.now += 0.01
    a.registry.set_state(DRAFT, "bob", 1, {"v": 1})
    if network == "announcement lost":
        net.in_flight.clear()  # v1 never reaches B directly
    net.deliver()
    a.bus.tick()  # A's heartbeat announcement, carrying v1, is held back ...
    held, net.in_flight = net.in_flight, []
    clock.now += 0.01
    b.registry.set_state(DRAFT, "bob", 2, {"v": 2})
    net.deliver()
    b.registry.detach(DRAFT, "bob", 2)  # b2 closes
    if network == "reordered":
        net.in_flight[:0] = held  # ... and arrives after v2 and the close
    net.deliver()
    for proc in (a, b):
        assert proc.members() == {"bob": {"v": 2}}
    clock.now += 1.0
    a.bus.tick()
    b.bus.tick()
    net.deliver()  # announcements (from A: v2, the newest) change nothing
    b.registry.attach(DRAFT, "bob", 3)
    net.deliver()
    for proc in (a, b):
        assert proc.members() == {"bob": {"v": 2}}
    a.registry.detach(DRAFT, "bob", 1)  # revocation: A's socket first, then B's
    net.deliver()
    assert a.members() == b.members() == {"bob": {"v": 2}}
    b.registry.detach(DRAFT, "bob", 3)
    net.deliver()
    for proc in (a, b):
        assert proc.members() == {}
        updates = [e.state_json for e in proc.events if e.kind == "update"]
        assert updates[-1] == b'{"v":2}', updates
        assert b'{"v":1}' not in updates[updates.index(b'{"v":2}') :]
        assert proc.events[-1].kind == "leave"


@pytest.mark.parametrize("how", ["restarted with a new node id", "leave lost, rejoined at once"])
def test_a_rejoined_user_is_shown_alike_everywhere_after_one_announcement_round(how: str) -> None:
    """bob set v2 through A only; then A is SIGKILLed and the supervisor's new worker (a new
    node id) gets bob's reconnecting socket — or A's leave of bob is lost and bob rejoins A at
    once. Either way A now announces bob's fresh ``{}``: its announcement replaces A's old source
    on the other processes, and after one announcement round every process shows ``{}``."""
    clock = Clock()
    net = Network(clock)
    a, c = Process(net, "pa", clock), Process(net, "pc", clock)
    a.registry.attach(DRAFT, "bob", 1)
    clock.now += 0.01
    a.registry.set_state(DRAFT, "bob", 1, {"v": 2})
    net.deliver()
    assert c.members() == {"bob": {"v": 2}}
    clock.now += 0.01
    if how == "restarted with a new node id":
        net.buses.remove(a.bus)  # no goodbye
        a = Process(net, "pa2", clock)
    else:
        a.registry.detach(DRAFT, "bob", 1)
        net.in_flight.clear()  # the leave is lost
        clock.now += 0.01
    a.registry.attach(DRAFT, "bob", 2)
    net.deliver()
    for _ in range(4):  # until the killed process expired (3 s), then one more round
        clock.now += 1.0
        a.bus.tick()
        c.bus.tick()
        net.deliver()
    assert a.members() == c.members() == {"bob": {}}
