"""The peer bus (eventstore/peerbus.py) on an in-memory network: framing, joining, expiry, bad input."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventstore.peerbus import (
    KIND_DATA,
    MAX_PAYLOAD,
    BadFrame,
    PeerBus,
    decode_frame,
    encode_frame,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Network:
    """Buses linked by lists: ``deliver`` hands every sent frame to every other bus, in order."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.buses: list[PeerBus] = []
        self.in_flight: list[tuple[PeerBus, bytes]] = []

    def join(self, name: str) -> PeerBus:
        bus = PeerBus(node_id=name, heartbeat=1.0, expiry=3.0, clock=self.clock)
        bus.attach(lambda frame, sender=bus: self.in_flight.append((sender, frame)))
        self.buses.append(bus)
        return bus

    def deliver(self) -> None:
        for _ in range(100):  # announcements answer hellos: a few rounds at most
            if not self.in_flight:
                return
            batch, self.in_flight = self.in_flight, []
            for sender, frame in batch:
                for bus in self.buses:
                    if bus is not sender:
                        bus.receive(frame)
        raise AssertionError("the network did not settle")


@given(
    kind=st.sampled_from([b"h", b"b", b"d", b"g"]),
    number=st.integers(0, 2**32 - 1),
    node=st.text(min_size=1, max_size=16),
    topic=st.text(max_size=16),
    payload=st.binary(max_size=MAX_PAYLOAD),
)
def test_a_frame_decodes_to_what_was_encoded(
    kind: bytes, number: int, node: str, topic: str, payload: bytes
) -> None:
    frame = encode_frame(kind, number, node, topic, payload)
    assert decode_frame(frame) == (kind, number, node, topic, payload)


@given(garbage=st.binary(max_size=300), tail=st.binary(max_size=64))
def test_garbage_is_counted_never_raised(garbage: bytes, tail: bytes) -> None:
    bus = PeerBus(node_id="me", clock=Clock())
    got: list[tuple[str, bytes]] = []
    bus.subscribe("t", lambda node, payload: got.append((node, payload)))
    for frame in (garbage, b"RLB1" + tail):
        try:
            decode_frame(frame)
        except BadFrame:
            bus.receive(frame)
            assert got == []
        else:
            bus.receive(frame)  # a valid frame by chance: delivered or ignored, never raises
    assert bus.bad_frames >= 0


def test_a_garbled_frame_is_logged_once_per_interval_and_the_bus_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    net = Network(clock)
    a, b = net.join("a"), net.join("b")
    got: list[tuple[str, bytes]] = []
    b.subscribe("t", lambda node, payload: got.append((node, payload)))
    with caplog.at_level(logging.WARNING, logger="eventstore.peerbus"):
        for garbage in (b"RLB1", b"RLB1x\x00\x00\x00\x01\xff", b"!!", b"RLB1d\x00\x00\x00\x00\x05ab"):
            b.receive(garbage)
    assert b.bad_frames == 4
    assert len([r for r in caplog.records if "dropped a frame" in r.getMessage()]) == 1
    a.publish("t", b"still here")
    net.deliver()
    assert got == [("a", b"still here")]


def test_a_message_reaches_every_other_node_in_order_and_not_its_sender() -> None:
    net = Network(Clock())
    a, b, c = net.join("a"), net.join("b"), net.join("c")
    got: dict[str, list[tuple[str, bytes]]] = {"a": [], "b": [], "c": []}
    for bus in (a, b, c):
        bus.subscribe("t", lambda node, payload, me=bus.node_id: got[me].append((node, payload)))
    a.publish("t", b"1")
    a.publish("t", b"1")  # identical payloads stay two messages
    a.publish("other", b"x")
    net.deliver()
    assert got == {"a": [], "b": [("a", b"1"), ("a", b"1")], "c": [("a", b"1"), ("a", b"1")]}


def test_an_echo_of_our_own_frame_is_ignored() -> None:
    bus = PeerBus(node_id="me", clock=Clock())
    got: list[bytes] = []
    bus.subscribe("t", lambda _node, payload: got.append(payload))
    bus.receive(encode_frame(KIND_DATA, 1, "me", "t", b"x"))
    assert got == [] and bus.live_nodes() == []


def test_a_hello_makes_every_node_announce_and_a_new_node_is_in_step_at_once() -> None:
    net = Network(Clock())
    a, b = net.join("a"), net.join("b")
    announced: list[str] = []
    a.on_announce(lambda: announced.append("a"))
    b.on_announce(lambda: announced.append("b"))
    b.hello()
    net.deliver()
    # a hears b's hello and announces; b hears a (a new node to it) and announces too
    assert sorted(announced) == ["a", "b"]
    assert a.live_nodes() == ["b"] and b.live_nodes() == ["a"]


def test_a_silent_node_expires_and_a_goodbye_drops_at_once() -> None:
    clock = Clock()
    net = Network(clock)
    a, b, c = net.join("a"), net.join("b"), net.join("c")
    expired: list[str] = []
    a.on_node_expired(expired.append)
    b.tick()
    c.tick()
    net.deliver()
    assert sorted(a.live_nodes()) == ["b", "c"]
    clock.now += 2.0
    c.tick()  # c keeps beating, b has died
    net.deliver()
    a.expire()
    assert expired == []
    clock.now += 1.5  # b silent for 3.5 s > expiry 3 s; c for 1.5 s
    a.expire()
    assert expired == ["b"] and a.live_nodes() == ["c"]
    net.in_flight.append((c, encode_frame(b"g", 9, "c", "", b"")))
    net.deliver()
    assert expired == ["b", "c"] and a.live_nodes() == []


def test_a_failing_handler_is_logged_and_other_handlers_still_run(caplog: pytest.LogCaptureFixture) -> None:
    net = Network(Clock())
    a, b = net.join("a"), net.join("b")
    got: list[bytes] = []

    def broken(_node: str, _payload: bytes) -> None:
        raise RuntimeError("handler bug")

    b.subscribe("t", broken)
    b.subscribe("t", lambda _node, payload: got.append(payload))
    with caplog.at_level(logging.ERROR, logger="eventstore.peerbus"):
        a.publish("t", b"x")
        net.deliver()
    assert got == [b"x"]
    assert any("handler of topic 't' failed" in r.getMessage() for r in caplog.records)


def test_limits_of_sizes_and_timing() -> None:
    bus = PeerBus(node_id="me")
    with pytest.raises(ValueError):
        bus.publish("t", b"x" * (MAX_PAYLOAD + 1))
    with pytest.raises(ValueError):
        bus.publish("t" * 65, b"")
    with pytest.raises(ValueError):
        bus.set_timing(5, 30)  # 30 + 2.5 > 30: a dead node would count longer than API.md allows
    with pytest.raises(ValueError):
        bus.set_timing(5, 5)
    bus.set_timing(1, 3)
    assert (bus.heartbeat, bus.expiry) == (1, 3)


def test_a_local_bus_publishes_to_nobody() -> None:
    bus = PeerBus()
    assert not bus.has_transport
    bus.publish("t", b"x")  # no transport: nothing happens, nothing raises
    assert bus.live_nodes() == []


def test_a_node_heard_again_after_it_expired_is_asked_to_announce_at_once() -> None:
    """A process whose event loop stalled past the expiry is dropped by its peers (its users
    leave); when it is heard again its peers ask it to announce at once, so its state is back
    within a round trip instead of at its next heartbeat (a review finding)."""
    clock = Clock()
    net = Network(clock)
    a, b = net.join("a"), net.join("b")
    announced: list[str] = []
    b.on_announce(lambda: announced.append("b"))
    a.tick()
    b.tick()
    net.deliver()
    announced.clear()
    clock.now += 4.0  # b stalls: silent past a's expiry of 3 s
    a.expire()
    assert a.live_nodes() == []
    b.publish("t", b"anything")  # b's loop runs again: its first frame reaches a
    net.deliver()
    assert a.live_nodes() == ["b"]
    assert announced == ["b"]  # b announced at once, asked by a's hello
    net.deliver()
    assert announced == ["b"]  # and once: no hello storm
