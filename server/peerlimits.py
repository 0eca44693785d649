"""Per-user limits shared by the processes serving one store (docs/API.md additions, "Limits
with several processes").

Each process counts what it admits, as before, and tells the others over the store's peer bus
(:mod:`eventstore.peerbus`); nothing on a request's path waits for the bus, reads the store or
does work that grows with the number of processes.

:class:`SharedSocketCounts` (``--max-sockets-per-user``)
    Each process publishes its per-user socket counts: the users whose count changed, batched
    every :data:`SOCKET_REPORT_INTERVAL` seconds, and its whole table with every heartbeat and
    when a process joins. A receiver keeps each live node's last table and the per-user sum of
    them; admission refuses when this process's count plus that sum reaches the cap. A node's
    table is dropped when the bus expires it, so a dead process's sockets stop counting within
    the bus's expiry (API.md's 30 s). Race: two sockets admitted on two processes within one
    report interval (plus the transport's delivery, about a millisecond) of each other may both
    pass; each process still enforces the cap on its own sockets, so a user holds at most
    ``N × cap`` sockets across N processes in the worst case, and in practice ``cap`` plus the
    sockets opened in that window. No open socket is closed for it.

:class:`SharedRateLimit` (``--rate-limit``)
    Each process keeps its own token bucket per user and publishes, every
    :data:`RATE_REPORT_INTERVAL` seconds, how many tokens each user took since the last report
    (only users who took any). Every receiver charges those tokens to its own bucket for the user
    (the bucket may go into debt, repaid at the rate). So every grant, wherever it happened, is
    charged to every bucket within one interval: over any T seconds the processes together grant
    a user at most ``rate × T + burst`` plus what the *other* processes granted in the last
    unreported interval — at most ``(N − 1) × rate × interval`` for a user sending steadily, and
    ``(N − 1) × burst`` in the first interval after the user was idle long enough for every bucket
    to fill.

Messages are JSON objects (orjson) of at most :data:`eventstore.peerbus.MAX_PAYLOAD` bytes; a big
table is split into several. A message that does not parse or holds values out of range is
dropped and logged (at most one line per 10 s): a garbled or forged message never fails a
process (docs/RELIABILITY.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from eventstore.peerbus import MAX_PAYLOAD, PeerBus, cancel_and_wait
from server.ratelimit import RateLimiter

log = logging.getLogger(__name__)

SOCKETS_TOPIC = "limits.sockets"
"""Bus topic of the per-user socket counts."""

RATE_TOPIC = "limits.rate"
"""Bus topic of the per-user tokens taken."""

SOCKET_REPORT_INTERVAL = 0.1
"""Seconds a changed socket count waits at most before it is published (changes are batched)."""

RATE_REPORT_INTERVAL = 0.2
"""Seconds between two reports of tokens taken."""

MAX_COUNT = 1_000_000
"""Largest count a message may carry (the settings' own bound); more is a garbled message."""

_CHUNK_BYTES = MAX_PAYLOAD - 96
"""Bytes of counts in one message (the rest of the payload is the envelope)."""

_BAD_LOG_INTERVAL = 10.0


def _chunks(counts: dict[str, int]) -> Iterator[dict[str, int]]:
    """Split ``counts`` into pieces whose JSON stays under :data:`_CHUNK_BYTES` (at least one piece)."""
    piece: dict[str, int] = {}
    size = 2
    for user, count in counts.items():
        entry = len(orjson.dumps(user)) + len(str(count)) + 2
        if piece and size + entry > _CHUNK_BYTES:
            yield piece
            piece, size = {}, 2
        piece[user] = count
        size += entry
    yield piece


class _Garbage:
    """Counts and logs dropped peer messages (one log line per 10 s at most)."""

    def __init__(self, what: str, clock: Callable[[], float]) -> None:
        self.what = what
        self.clock = clock
        self.dropped = 0
        self._last_log = -_BAD_LOG_INTERVAL

    def drop(self, node_id: str, reason: str) -> None:
        self.dropped += 1
        now = self.clock()
        if now - self._last_log >= _BAD_LOG_INTERVAL:
            self._last_log = now
            log.warning(
                "dropped a garbled %s message from node %r (%s; %d dropped so far)",
                self.what,
                node_id[:64],
                reason,
                self.dropped,
            )


def _parse(payload: bytes) -> tuple[dict[str, Any], dict[str, int]] | str:
    """``(envelope, counts)`` of a message, or why it is garbled."""
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "not JSON"
    if not isinstance(message, dict):
        return "not an object"
    counts = message.get("c")
    if not isinstance(counts, dict):
        return "no counts"
    for user, count in counts.items():
        if type(count) is not int or not 0 <= count <= MAX_COUNT or not user:
            return "a count out of range"
    return message, counts


@dataclass
class _PartialTable:
    """A node's whole table, arriving in ``parts`` messages of announcement ``number``."""

    number: int
    parts: int
    seen: set[int] = field(default_factory=set)
    table: dict[str, int] = field(default_factory=dict)


class SharedSocketCounts:
    """Per-user open sockets on every live process (see the module doc).

    ``local_count(user)`` is this process's count; ``local_table()`` all of its non-zero counts.
    Call :meth:`changed` whenever a user's local count changes.
    """

    def __init__(
        self,
        bus: PeerBus,
        local_count: Callable[[str], int],
        local_table: Callable[[], dict[str, int]],
        report_interval: float = SOCKET_REPORT_INTERVAL,
    ) -> None:
        self.bus = bus
        self._local_count = local_count
        self._local_table = local_table
        self.report_interval = report_interval
        self._tables: dict[str, dict[str, int]] = {}
        self._partial: dict[str, _PartialTable] = {}
        self._totals: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._report_handle: asyncio.TimerHandle | None = None
        self._announcements = 0
        self._garbage = _Garbage("socket count", bus.clock)
        self._started = False

    def start(self) -> None:
        """Listen to the other processes' counts and publish ours (nothing to do on a local bus)."""
        if self._started or not self.bus.has_transport:
            return
        self._started = True
        self.bus.subscribe(SOCKETS_TOPIC, self.receive)
        self.bus.on_announce(self.announce)
        self.bus.on_node_expired(self.drop_node)

    def close(self) -> None:
        """Stop the pending report (the bus's goodbye makes peers drop our counts)."""
        self._started = False
        if self._report_handle is not None:
            self._report_handle.cancel()
            self._report_handle = None

    # -- this process -----------------------------------------------------------------------

    def total(self, user_id: str) -> int:
        """Sockets of ``user_id`` on this process plus those last reported by live peers."""
        return self._local_count(user_id) + self._totals.get(user_id, 0)

    def peer_count(self, user_id: str) -> int:
        """Sockets of ``user_id`` last reported by live peers."""
        return self._totals.get(user_id, 0)

    def changed(self, user_id: str) -> None:
        """``user_id``'s local count changed: publish it within :attr:`report_interval`."""
        if not self._started:
            return
        self._dirty.add(user_id)
        if self._report_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # driven by hand (tests): the next report() publishes it
                return
            self._report_handle = loop.call_later(self.report_interval, self.report)

    def report(self) -> None:
        """Publish the changed users' counts now (absolute values: a lost one is fixed by a heartbeat)."""
        self._report_handle = None
        dirty, self._dirty = self._dirty, set()
        if not dirty or not self._started:
            return
        counts = {user: self._local_count(user) for user in dirty}
        for piece in _chunks(counts):
            self.bus.publish(SOCKETS_TOPIC, orjson.dumps({"k": "u", "c": piece}))

    def announce(self) -> None:
        """Publish the whole table (peers replace what they hold for this process)."""
        self._announcements += 1
        pieces = list(_chunks(self._local_table()))
        for index, piece in enumerate(pieces):
            message = {"k": "f", "s": self._announcements, "i": index, "n": len(pieces), "c": piece}
            self.bus.publish(SOCKETS_TOPIC, orjson.dumps(message))

    # -- the other processes ----------------------------------------------------------------

    def receive(self, node_id: str, payload: bytes) -> None:
        """A peer's counts (a bus handler; a garbled message is dropped and logged)."""
        parsed = _parse(payload)
        if isinstance(parsed, str):
            self._garbage.drop(node_id, parsed)
            return
        message, counts = parsed
        kind = message.get("k")
        if kind == "u":
            table = self._tables.setdefault(node_id, {})
            for user, count in counts.items():
                self._set(table, user, count)
            partial = self._partial.get(node_id)
            if partial is not None:  # a later change than the announcement being assembled
                partial.table.update(counts)
            return
        number, index, parts = message.get("s"), message.get("i"), message.get("n")
        if (
            kind != "f"
            or type(number) is not int
            or type(index) is not int
            or type(parts) is not int
            or not 0 <= index < parts <= 10_000
        ):
            self._garbage.drop(node_id, "a garbled announcement")
            return
        partial = self._partial.get(node_id)
        if partial is None or partial.number != number or partial.parts != parts:
            partial = self._partial[node_id] = _PartialTable(number, parts)
        partial.seen.add(index)
        partial.table.update(counts)
        if len(partial.seen) == parts:
            del self._partial[node_id]
            self._replace(node_id, partial.table)

    def drop_node(self, node_id: str) -> None:
        """Forget a node's counts (the bus expired it, or it said goodbye)."""
        self._partial.pop(node_id, None)
        self._replace(node_id, {})
        self._tables.pop(node_id, None)

    def _replace(self, node_id: str, new: dict[str, int]) -> None:
        table = self._tables.setdefault(node_id, {})
        for user in [u for u in table if u not in new]:
            self._set(table, user, 0)
        for user, count in new.items():
            self._set(table, user, count)

    def _set(self, table: dict[str, int], user: str, count: int) -> None:
        delta = count - table.get(user, 0)
        if count:
            table[user] = count
        else:
            table.pop(user, None)
        if delta:
            total = self._totals.get(user, 0) + delta
            if total > 0:
                self._totals[user] = total
            else:
                self._totals.pop(user, None)


class SharedRateLimit:
    """Shares a :class:`RateLimiter`'s consumption with the other processes (see the module doc)."""

    def __init__(
        self, bus: PeerBus, limiter: RateLimiter, report_interval: float = RATE_REPORT_INTERVAL
    ) -> None:
        self.bus = bus
        self.limiter = limiter
        self.report_interval = report_interval
        self._task: asyncio.Task[None] | None = None
        self._garbage = _Garbage("rate", bus.clock)

    @property
    def max_charge(self) -> int:
        """Most tokens one report may charge for one user: what one process can grant in two
        intervals from a full bucket; a larger number is a garbled (or forged) report."""
        return int(self.limiter.burst + 2 * self.limiter.rate * self.report_interval) + 1

    def start(self) -> None:
        """Listen to peers' reports and report ours periodically (nothing on a local bus or with limiting off)."""
        if self._task is not None or not self.bus.has_transport or not self.limiter.enabled:
            return
        self.limiter.track_taken = True
        self.bus.subscribe(RATE_TOPIC, self.receive)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ringlog-rate-share")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.report_interval)
            self.report()

    async def close(self) -> None:
        """Stop reporting."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        self.limiter.track_taken = False

    def report(self) -> None:
        """Publish the tokens each user took since the last report (only users who took any)."""
        taken = self.limiter.take_taken()
        if not taken:
            return
        for piece in _chunks(taken):
            self.bus.publish(RATE_TOPIC, orjson.dumps({"c": piece}))

    def receive(self, node_id: str, payload: bytes) -> None:
        """A peer's report: charge its tokens to our buckets (a garbled report is dropped, logged)."""
        parsed = _parse(payload)
        if isinstance(parsed, str):
            self._garbage.drop(node_id, parsed)
            return
        _message, counts = parsed
        limit = self.max_charge
        if any(n > limit for n in counts.values()):
            self._garbage.drop(node_id, f"a report of more than {limit} tokens")
            return
        for user, n in counts.items():
            self.limiter.charge(user, n)


class PeerLimits:
    """The shared socket cap and rate limit of one process, started with the store."""

    def __init__(
        self,
        bus: PeerBus,
        limiter: RateLimiter,
        local_count: Callable[[str], int],
        local_table: Callable[[], dict[str, int]],
    ) -> None:
        self.sockets = SharedSocketCounts(bus, local_count, local_table)
        self.rate = SharedRateLimit(bus, limiter)

    def start(self) -> None:
        """Begin sharing (after the store opened: its bus has a transport by then)."""
        self.sockets.start()
        self.rate.start()

    async def close(self) -> None:
        """Stop sharing (before the store closes)."""
        self.sockets.close()
        await self.rate.close()
