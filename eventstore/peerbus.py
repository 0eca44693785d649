"""The peer bus: small best-effort messages between the processes that share one store.

Several ``ringlog serve`` processes (the workers of ``--workers N`` on one SQLite file, or nodes
on one PostgreSQL database) share a log, but state that is not in the log — how many sockets a
user holds on each process, how many mutations each process granted a user lately, later who is
present — lives in one process's memory. The bus lets each process broadcast such state to all
the others; it never carries anything the log's guarantees depend on.

Shape:

* Every process has a random :attr:`PeerBus.node_id`. :meth:`PeerBus.publish` sends a payload
  (bytes, at most :data:`MAX_PAYLOAD`) under a topic to every other live process, best effort:
  a message may be lost (never duplicated; messages of one sender arrive in send order on
  both transports), so publishers send *state* (absolute values, re-sent periodically), not
  increments that must all arrive — or accept that a lost increment is forgotten.
* :meth:`PeerBus.subscribe` registers ``handler(node_id, payload)`` for a topic.
* **Liveness.** Each process sends a heartbeat every ``heartbeat`` seconds and then calls the
  announcers (:meth:`PeerBus.on_announce`), which re-publish their whole state. A node not heard
  from for ``expiry`` seconds (at most 30, API.md "presence": a dead node's users leave within
  30 s) is dropped: every :meth:`PeerBus.on_node_expired` callback runs with its id, so the
  receivers forget its contributions. A closing process says goodbye (dropped at once).
* **Joining.** A starting process sends a hello; every process that hears a node it does not
  know (a hello or any other message) announces its state at once, so a new process is in step
  within one round trip rather than one heartbeat.
* **Bad input.** A frame that does not parse (a garbled datagram, a forged notification, a
  payload from another version) is dropped and logged (at most one line per
  :data:`BAD_FRAME_LOG_INTERVAL` seconds), and a handler that raises is logged; neither stops
  the bus or the process (docs/RELIABILITY.md, "Bad input, by kind").

A user of the bus needs four wirings, as :mod:`server.peerlimits` shows and presence will:
``subscribe(topic, handler)`` to apply a peer's state (``registry.apply_remote(node_id, …)``),
``on_node_expired`` to forget a node (``registry.drop_node(node_id)``), ``on_announce`` to
re-publish its whole local state, and a local-change hook that publishes the change. State over
4 KiB is sent in parts (``server.peerlimits.SharedSocketCounts.announce`` numbers them, and a
receiver replaces its table only when every part of one announcement arrived).

Transports (the store picks one; this module knows none of them): SQLite sends each frame as a
datagram to every peer process of the same file (:class:`eventstore.discovery.PeerWakeups`),
PostgreSQL as a ``NOTIFY`` on :data:`eventstore.postgres.BUS_CHANNEL`, the memory store (and an
unshared SQLite file) has no peers: the bus is local and publishes to nobody.

Frame (bytes): ``RLB1`` | kind (1 byte: ``h`` hello, ``b`` heartbeat, ``d`` data, ``g``
goodbye) | sender's message number (4 bytes, big endian) | node id length (1) | node id |
topic length (1) | topic | payload. The message number keeps two identical payloads distinct
(PostgreSQL folds identical notifications of one transaction into one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import struct
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

MAGIC = b"RLB1"
"""First bytes of every bus frame (a datagram that does not start so is no bus message)."""

MAX_PAYLOAD = 4096
"""Bytes in one published payload at most (a NOTIFY payload must stay under 8000 bytes)."""

MAX_NAME = 64
"""Bytes in a node id or a topic at most."""

MAX_FRAME = len(MAGIC) + 1 + 4 + 1 + MAX_NAME + 1 + MAX_NAME + MAX_PAYLOAD
"""Bytes in one frame at most."""

HEARTBEAT = 5.0
"""Default seconds between two heartbeats (and state re-announcements) of a process."""

EXPIRY = 15.0
"""Default seconds without a word from a node after which its contributions are dropped."""

MAX_EXPIRY = 30.0
"""The bound API.md sets: a dead node's users leave within 30 s."""

BAD_FRAME_LOG_INTERVAL = 10.0
"""Seconds between two log lines about dropped frames (a flood of garbage is one line)."""

HELLO_MIN_INTERVAL = 1.0
"""Seconds between two hellos sent because an unknown process was heard (a starting process
hears every peer at once: one hello covers them all)."""

_HEADER = struct.Struct(">cI")

KIND_HELLO = b"h"
KIND_HEARTBEAT = b"b"
KIND_DATA = b"d"
KIND_GOODBYE = b"g"
_KINDS = (KIND_HELLO, KIND_HEARTBEAT, KIND_DATA, KIND_GOODBYE)

Handler = Callable[[str, bytes], None]
"""``handler(node_id, payload)``: a message from another process; runs on the event loop."""


class BadFrame(ValueError):
    """A received frame does not parse as a bus frame."""


def encode_frame(kind: bytes, number: int, node_id: str, topic: str, payload: bytes) -> bytes:
    """One frame (see the module doc); raises ValueError if a part is too long."""
    node = node_id.encode()
    name = topic.encode()
    if len(node) > MAX_NAME or len(name) > MAX_NAME:
        raise ValueError("node id and topic are 64 bytes at most")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a bus payload is {MAX_PAYLOAD} bytes at most, got {len(payload)}")
    return b"".join(
        (
            MAGIC,
            _HEADER.pack(kind, number & 0xFFFFFFFF),
            bytes((len(node),)),
            node,
            bytes((len(name),)),
            name,
            payload,
        )
    )


def decode_frame(frame: bytes) -> tuple[bytes, int, str, str, bytes]:
    """``(kind, number, node_id, topic, payload)`` of a frame; raises :class:`BadFrame`."""
    if len(frame) > MAX_FRAME or not frame.startswith(MAGIC):
        raise BadFrame("not a bus frame")
    at = len(MAGIC)
    try:
        kind, number = _HEADER.unpack_from(frame, at)
        at += _HEADER.size
        node_len = frame[at]
        node = frame[at + 1 : at + 1 + node_len].decode()
        at += 1 + node_len
        topic_len = frame[at]
        topic = frame[at + 1 : at + 1 + topic_len].decode()
        at += 1 + topic_len
    except (IndexError, struct.error, UnicodeDecodeError) as e:
        raise BadFrame(f"truncated or garbled frame ({e.__class__.__name__})") from None
    if kind not in _KINDS or not node or len(node.encode()) != node_len or len(topic.encode()) != topic_len:
        raise BadFrame("garbled frame header")
    return kind, number, node, topic, frame[at:]


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` (a background loop) and wait until it has ended; its cancellation is swallowed."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def new_node_id() -> str:
    """A process's id on the bus: its pid and 48 random bits (unique across hosts and restarts)."""
    return f"{os.getpid()}-{secrets.token_hex(6)}"


class PeerBus:
    """One process's end of the bus (see the module doc).

    ``send(frame)`` hands a frame to the transport (must not block; may drop it); None means no
    peers (a local bus). ``heartbeat`` and ``expiry`` are seconds (``expiry`` at most 30 and
    more than ``heartbeat``). ``clock`` is monotonic seconds. :meth:`start` begins heartbeats;
    tests may instead drive :meth:`tick` themselves.
    """

    def __init__(
        self,
        send: Callable[[bytes], None] | None = None,
        *,
        node_id: str | None = None,
        heartbeat: float = HEARTBEAT,
        expiry: float = EXPIRY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = node_id if node_id is not None else new_node_id()
        self._send = send
        self.clock = clock
        self.heartbeat = heartbeat
        self.expiry = expiry
        self.set_timing(heartbeat, expiry)
        self._handlers: dict[str, list[Handler]] = {}
        self._announcers: list[Callable[[], None]] = []
        self._expired_callbacks: list[Callable[[str], None]] = []
        self._last_seen: dict[str, float] = {}
        self._last_hello = -math.inf
        self._number = 0
        self._task: asyncio.Task[None] | None = None
        self._announce_handle: asyncio.Handle | None = None
        self._last_bad_log = -BAD_FRAME_LOG_INTERVAL
        self.bad_frames = 0
        """Frames dropped because they did not parse (for tests and operators)."""

    # -- configuration ----------------------------------------------------------------------

    def set_timing(self, heartbeat: float, expiry: float) -> None:
        """Change the heartbeat period and the expiry (seconds); call before :meth:`start`.

        A dead node is dropped within ``expiry + heartbeat / 2`` seconds (the expiry check runs
        every half heartbeat); raises ValueError unless ``0 < heartbeat < expiry`` and that sum
        is at most 30 (:data:`MAX_EXPIRY`).
        """
        if not (0 < heartbeat < expiry and expiry + heartbeat / 2 <= MAX_EXPIRY):
            raise ValueError(
                f"need 0 < heartbeat < expiry and expiry + heartbeat/2 <= {MAX_EXPIRY:g} seconds"
            )
        self.heartbeat = heartbeat
        self.expiry = expiry

    def attach(self, send: Callable[[bytes], None] | None) -> None:
        """Set the transport's ``send(frame)`` (the store does, once its channel is open); None detaches."""
        self._send = send

    @property
    def has_transport(self) -> bool:
        """False for a local bus (memory store, unshared SQLite file): nobody else hears it."""
        return self._send is not None

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Call ``handler(node_id, payload)`` for every message of ``topic`` from another process."""
        self._handlers.setdefault(topic, []).append(handler)

    def on_announce(self, announce: Callable[[], None]) -> None:
        """Call ``announce()`` with every heartbeat and when a new node appears: re-publish state."""
        self._announcers.append(announce)

    def on_node_expired(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(node_id)`` when a node is dropped (silent for ``expiry``, or said goodbye)."""
        self._expired_callbacks.append(callback)

    def live_nodes(self) -> list[str]:
        """The other processes heard from within ``expiry`` seconds."""
        return list(self._last_seen)

    # -- sending ----------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes) -> None:
        """Send ``payload`` under ``topic`` to every other process, best effort, without blocking.

        Raises ValueError for a payload over :data:`MAX_PAYLOAD` bytes or a topic over 64.
        """
        self._emit(KIND_DATA, topic, payload)

    def _emit(self, kind: bytes, topic: str = "", payload: bytes = b"") -> None:
        frame = encode_frame(kind, self._number, self.node_id, topic, payload)
        self._number += 1
        if self._send is None:
            return
        try:
            self._send(frame)
        except Exception:  # a transport that fails must not fail the publisher
            log.exception("peer bus: sending a %r frame failed", kind)

    def hello(self) -> None:
        """Ask every process to announce its state now (the transport is up, or up again)."""
        self._last_hello = self.clock()
        self._emit(KIND_HELLO)

    # -- receiving --------------------------------------------------------------------------

    def receive(self, frame: bytes) -> None:
        """A frame from the transport (never raises: a bad frame is counted and logged)."""
        try:
            kind, _number, node_id, topic, payload = decode_frame(frame)
        except BadFrame as e:
            self._bad_frame(str(e), frame)
            return
        if node_id == self.node_id:
            return  # our own, echoed (PostgreSQL delivers a NOTIFY to every listener)
        if kind == KIND_GOODBYE:
            if self._last_seen.pop(node_id, None) is not None:
                self._expired(node_id)
            return
        known = node_id in self._last_seen
        self._last_seen[node_id] = self.clock()
        if not known or kind == KIND_HELLO:
            self._schedule_announce()
        if not known and kind != KIND_HELLO and self.clock() - self._last_hello >= HELLO_MIN_INTERVAL:
            # a process we did not know: new, or back after we expired it (a stalled event loop),
            # and then its state was dropped here: ask it to announce now, not at its next beat
            self.hello()
        if kind == KIND_DATA:
            for handler in self._handlers.get(topic, ()):
                try:
                    handler(node_id, payload)
                except Exception:
                    log.exception(
                        "peer bus: a handler of topic %r failed on a message from %s", topic, node_id
                    )

    def _bad_frame(self, reason: str, frame: bytes) -> None:
        self.bad_frames += 1
        now = self.clock()
        if now - self._last_bad_log >= BAD_FRAME_LOG_INTERVAL:
            self._last_bad_log = now
            log.warning(
                "peer bus: dropped a frame that is not a bus message (%s; %d dropped so far; first bytes %r)",
                reason,
                self.bad_frames,
                frame[:16],
            )

    def _schedule_announce(self) -> None:
        """Announce on the next loop turn (many hellos at once give one announcement)."""
        if self._announce_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # driven by hand (tests)
            self._announce_now()
            return
        self._announce_handle = loop.call_soon(self._announce_now)

    def _announce_now(self) -> None:
        self._announce_handle = None
        self._emit(KIND_HEARTBEAT)  # the newcomer learns we are alive even if we have no state
        self.announce()

    def announce(self) -> None:
        """Run every announcer (each re-publishes its whole state); errors are logged."""
        for announce in self._announcers:
            try:
                announce()
            except Exception:
                log.exception("peer bus: an announcer failed")

    # -- liveness ---------------------------------------------------------------------------

    def tick(self) -> None:
        """One heartbeat: drop nodes silent for ``expiry``, say we are alive, announce state."""
        self.expire()
        self._emit(KIND_HEARTBEAT)
        self.announce()

    def expire(self) -> None:
        """Drop every node not heard from for ``expiry`` seconds (its callbacks run)."""
        deadline = self.clock() - self.expiry
        for node_id in [n for n, seen in self._last_seen.items() if seen < deadline]:
            del self._last_seen[node_id]
            self._expired(node_id)

    def _expired(self, node_id: str) -> None:
        log.info("peer bus: node %s left", node_id)
        for callback in self._expired_callbacks:
            try:
                callback(node_id)
            except Exception:
                log.exception("peer bus: a node-expired callback failed")

    def start(self) -> None:
        """Say hello and begin heartbeats; once started, only say hello (a transport back up).

        A local bus (no transport) does nothing: it has nobody to talk to.
        """
        if self._send is None:
            return
        self.hello()
        if self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ringlog-peer-bus")

    async def _run(self) -> None:
        # expiry is checked more often than heartbeats are sent: a dead node is dropped within
        # expiry + heartbeat / 2 at most
        step = self.heartbeat / 2
        next_beat = self.clock() + self.heartbeat
        while True:
            await asyncio.sleep(step)
            if self.clock() >= next_beat:
                next_beat += self.heartbeat
                self.tick()
            else:
                self.expire()

    async def close(self) -> None:
        """Stop heartbeats and say goodbye (peers drop this node's contributions at once)."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
            self._emit(KIND_GOODBYE)
        if self._announce_handle is not None:
            self._announce_handle.cancel()
            self._announce_handle = None
