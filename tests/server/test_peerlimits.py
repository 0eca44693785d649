"""Per-user limits shared over the peer bus (server/peerlimits.py), on an in-memory network."""

from __future__ import annotations

import logging

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.peerlimits import RATE_TOPIC, SOCKETS_TOPIC, SharedRateLimit, SharedSocketCounts
from server.ratelimit import RateLimiter
from tests.eventstore.test_peerbus import Clock, Network

USERS = ("alice", "bob", "carol")


class Process:
    """One process's socket counts, linked to the network by its bus."""

    def __init__(self, net: Network, name: str) -> None:
        self.bus = net.join(name)
        self.local: dict[str, int] = {}
        self.counts = SharedSocketCounts(
            self.bus, lambda u: self.local.get(u, 0), lambda: {u: n for u, n in self.local.items() if n}
        )
        self.counts.start()
        self.alive = True

    def connect(self, user: str) -> None:
        self.local[user] = self.local.get(user, 0) + 1
        self.counts.changed(user)

    def disconnect(self, user: str) -> None:
        if self.local.get(user, 0):
            self.local[user] -= 1
            self.counts.changed(user)


op = st.one_of(
    st.tuples(st.just("connect"), st.integers(0, 2), st.sampled_from(USERS)),
    st.tuples(st.just("disconnect"), st.integers(0, 2), st.sampled_from(USERS)),
    st.tuples(st.just("report"), st.integers(0, 2), st.none()),
    st.tuples(st.just("deliver"), st.none(), st.none()),
    st.tuples(st.just("lose"), st.none(), st.none()),
    st.tuples(st.just("tick"), st.integers(0, 2), st.none()),
    st.tuples(st.just("kill"), st.integers(0, 2), st.none()),
)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(op, max_size=60))
def test_the_shared_count_is_the_sum_of_live_processes_counts(
    ops: list[tuple[str, int | None, str | None]],
) -> None:
    clock = Clock()
    net = Network(clock)
    procs = [Process(net, f"p{i}") for i in range(3)]
    for name, index, user in ops:
        proc = procs[index] if index is not None else None
        if proc is not None and not proc.alive:
            continue
        if name == "connect" and proc and user:
            proc.connect(user)
        elif name == "disconnect" and proc and user:
            proc.disconnect(user)
        elif name == "report" and proc:
            proc.counts.report()
        elif name == "deliver":
            net.deliver()
        elif name == "lose":
            net.in_flight.clear()  # best effort: any message may be lost
        elif name == "tick" and proc:
            clock.now += 0.5
            proc.bus.tick()
        elif name == "kill" and proc:
            proc.alive = False  # SIGKILL: no goodbye, its frames in flight still arrive
            net.buses.remove(proc.bus)
    # settle: every live process heartbeats (whole tables) until the dead ones expire
    net.deliver()
    clock.now += 10.0
    for proc in procs:
        if proc.alive:
            proc.counts.report()
            proc.bus.tick()
    net.deliver()
    for proc in procs:
        if proc.alive:
            proc.bus.expire()
    for proc in procs:
        if not proc.alive:
            continue
        for user in USERS:
            expected = sum(p.local.get(user, 0) for p in procs if p.alive)
            assert proc.counts.total(user) == expected, (proc.bus.node_id, user)


def test_updates_between_announcement_parts_are_kept() -> None:
    clock = Clock()
    net = Network(clock)
    a, b = Process(net, "a"), Process(net, "b")
    for i in range(400):  # enough users for several parts
        a.local[f"user-{i:04}-" + "x" * 20] = 1
    a.counts.announce()
    a.local["user-0000-" + "x" * 20] = 3
    a.counts.changed("user-0000-" + "x" * 20)
    a.counts.report()
    net.deliver()
    assert len([f for f in net.in_flight]) == 0
    assert b.counts.peer_count("user-0000-" + "x" * 20) == 3
    assert b.counts.peer_count("user-0399-" + "x" * 20) == 1


def test_a_lost_part_leaves_the_old_table_until_the_next_heartbeat() -> None:
    clock = Clock()
    net = Network(clock)
    a, b = Process(net, "a"), Process(net, "b")
    a.connect("alice")
    a.counts.report()
    net.deliver()
    assert b.counts.peer_count("alice") == 1
    for i in range(400):
        a.local[f"user-{i:04}-" + "x" * 20] = 1
    a.counts.announce()
    net.in_flight.pop(0)  # the first part is lost: the partial table must not replace the old
    net.deliver()
    assert b.counts.peer_count("alice") == 1
    assert b.counts.peer_count("user-0399-" + "x" * 20) == 0
    a.bus.tick()
    net.deliver()
    assert b.counts.peer_count("user-0399-" + "x" * 20) == 1


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[]",
        b'{"k":"u"}',
        b'{"k":"u","c":{"alice":-1}}',
        b'{"k":"u","c":{"alice":1.5}}',
        b'{"k":"u","c":{"alice":true}}',
        b'{"k":"u","c":{"alice":99999999999}}',
        b'{"k":"f","s":"1","i":0,"n":1,"c":{"alice":1}}',
        b'{"k":"f","s":1,"i":2,"n":1,"c":{"alice":1}}',
        b'{"k":"?","c":{"alice":1}}',
        b'{"c":{"":1}}',
    ],
)
def test_a_garbled_socket_count_message_is_dropped_and_logged(
    payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    net = Network(Clock())
    a, b = Process(net, "a"), Process(net, "b")
    with caplog.at_level(logging.WARNING, logger="server.peerlimits"):
        a.bus.publish(SOCKETS_TOPIC, payload)
        net.deliver()
    assert b.counts.peer_count("alice") == 0
    assert any("garbled socket count message" in r.getMessage() for r in caplog.records)


def _rate_pair(clock: Clock, rate: float) -> tuple[Network, list[SharedRateLimit]]:
    net = Network(clock)
    shares = []
    for name in ("a", "b"):
        bus = net.join(name)
        limiter = RateLimiter(rate, clock=clock)
        limiter.track_taken = True
        share = SharedRateLimit(bus, limiter)
        bus.subscribe(RATE_TOPIC, share.receive)
        shares.append(share)
    return net, shares


def test_grants_on_one_process_are_charged_on_the_other() -> None:
    clock = Clock()
    net, (a, b) = _rate_pair(clock, rate=5)
    granted = sum(a.limiter.allow("alice") == 0 for _ in range(10))
    assert granted == 10  # the burst: twice the rate
    a.report()
    net.deliver()
    assert b.limiter.allow("alice") > 0  # b's bucket was charged a's ten
    assert b.limiter.allow("bob") == 0  # other users are untouched


@settings(max_examples=40, deadline=None)
@given(
    rate=st.sampled_from([2.0, 5.0, 20.0]),
    pattern=st.lists(st.integers(0, 1), min_size=1, max_size=8),
    per_step=st.integers(1, 6),
)
def test_two_processes_together_grant_about_the_rate(rate: float, pattern: list[int], per_step: int) -> None:
    """A user hammering both processes (reports every 0.2 s) gets at most rate × T + burst + one
    unreported interval of the other process's grants (docs/API.md's bound for N = 2)."""
    clock = Clock()
    net, shares = _rate_pair(clock, rate)
    step = 0.02
    seconds = 10.0
    granted = 0
    unreported_max = 0
    since_report = 0.0
    for i in range(int(seconds / step)):
        clock.now += step
        for _ in range(per_step):
            share = shares[pattern[i % len(pattern)]]
            granted += share.limiter.allow("alice") == 0
        since_report += step
        if since_report >= share.report_interval - 1e-9:
            since_report = 0.0
            for s in shares:
                unreported_max = max(unreported_max, sum(s.limiter._taken.values()))
                s.report()
            net.deliver()
    burst = 2 * rate
    bound = rate * seconds + burst + burst  # steady state + the first burst + one unreported burst
    assert granted <= bound
    assert granted >= rate * seconds * 0.5 or per_step * seconds / step < rate * seconds


def test_a_forged_rate_report_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    net, (a, b) = _rate_pair(clock, rate=5)
    with caplog.at_level(logging.WARNING, logger="server.peerlimits"):
        a.bus.publish(RATE_TOPIC, orjson.dumps({"c": {"alice": 1_000_000}}))
        a.bus.publish(RATE_TOPIC, b"\xff\xfe")
        net.deliver()
    assert b.limiter.allow("alice") == 0  # nothing charged
    assert len([r for r in caplog.records if "garbled rate message" in r.getMessage()]) == 1
