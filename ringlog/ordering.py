"""Exactly-once, in-order delivery from channels that may repeat, reorder or skip events.

Pure and synchronous, so it can be tested directly: feed it whatever arrived, in whatever
order; it hands back the events that can now be applied, each seq once, in seq order.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar


class HasSeq(Protocol):
    """Anything with a draft-local sequence number."""

    @property
    def seq(self) -> int: ...


E = TypeVar("E", bound=HasSeq)

DEFAULT_MAX_PENDING = 10_000


class SeqOrderer(Generic[E]):
    """Releases events strictly as ``last_seq + 1, last_seq + 2, …``.

    An event at or below ``last_seq`` is a duplicate and is dropped; one beyond the next seq
    waits in ``pending`` until the hole before it is filled (``has_gap`` tells the caller to
    fetch ``/events?since=last_seq``). ``pending`` is bounded: when it overflows it is emptied,
    which loses nothing, because those events are fetched again from ``last_seq``.
    """

    def __init__(self, last_seq: int = 0, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if last_seq < 0:
            raise ValueError("last_seq must be >= 0")
        self.last_seq = last_seq
        self.max_pending = max_pending
        self._pending: dict[int, E] = {}

    @property
    def has_gap(self) -> bool:
        """Events beyond a missing seq are waiting."""
        return bool(self._pending)

    @property
    def pending(self) -> int:
        """How many early events are held back."""
        return len(self._pending)

    def offer(self, event: E) -> list[E]:
        """Take one delivery; return the events that are now next in order (maybe none)."""
        seq = event.seq
        if seq <= self.last_seq or seq in self._pending:
            return []
        if seq != self.last_seq + 1:
            if len(self._pending) >= self.max_pending:
                self._pending.clear()
            self._pending[seq] = event
            return []
        ready = [event]
        self.last_seq = seq
        while (nxt := self._pending.pop(self.last_seq + 1, None)) is not None:
            ready.append(nxt)
            self.last_seq = nxt.seq
        return ready

    def offer_all(self, events: list[E]) -> list[E]:
        """:meth:`offer` each of ``events``; the concatenated releases."""
        ready: list[E] = []
        for event in events:
            ready.extend(self.offer(event))
        return ready
