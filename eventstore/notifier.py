"""Wakes readers after a commit.

A wake-up is a hint, never the data of record: a reader that is woken reads the log by seq.
Listeners are plain callbacks run on the event loop right after the commit that produced the
records (this process's own commits, and on a shared store the commits of other processes found
by commit discovery), in position order; they must not block (they queue work and return).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence

from eventstore.events import Record

log = logging.getLogger(__name__)

Listener = Callable[[Sequence[Record]], None]


class Notifier:
    """Per-stream and global subscribers of committed records."""

    def __init__(self) -> None:
        self._by_stream: dict[str, list[Listener]] = defaultdict(list)
        self._global: list[Listener] = []

    def add_listener(self, stream_id: str, listener: Listener) -> None:
        """Call ``listener`` with every batch of ``stream_id``'s records committed from now on."""
        self._by_stream[stream_id].append(listener)

    def remove_listener(self, stream_id: str, listener: Listener) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        listeners = self._by_stream.get(stream_id)
        if listeners is None:
            return
        try:
            listeners.remove(listener)
        except ValueError:
            return
        if not listeners:
            del self._by_stream[stream_id]

    def add_global_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every committed batch, whatever its stream."""
        self._global.append(listener)

    def remove_global_listener(self, listener: Listener) -> None:
        """Stop calling a global listener; unknown listeners are ignored."""
        if listener in self._global:
            self._global.remove(listener)

    def listener_count(self, stream_id: str) -> int:
        """How many per-stream listeners ``stream_id`` has."""
        return len(self._by_stream.get(stream_id, ()))

    def publish(self, records: Sequence[Record]) -> None:
        """Deliver committed records (of one or several streams, in position order)."""
        if not records:
            return
        for listener in tuple(self._global):
            self._call(listener, records)
        if not self._by_stream:
            return
        first = records[0].stream_id
        if all(r.stream_id == first for r in records):
            groups: dict[str, Sequence[Record]] = {first: records}
        else:
            grouped: dict[str, list[Record]] = defaultdict(list)
            for record in records:
                grouped[record.stream_id].append(record)
            groups = dict(grouped)
        for stream_id, group in groups.items():
            for listener in tuple(self._by_stream.get(stream_id, ())):
                self._call(listener, group)

    @staticmethod
    def _call(listener: Listener, records: Sequence[Record]) -> None:
        try:
            listener(records)
        except Exception:  # one broken subscriber must not stop the others
            log.exception("notifier listener failed")

    async def wait_for(self, stream_id: str, after_seq: int, timeout: float) -> bool:
        """Wait until a record of ``stream_id`` with ``seq > after_seq`` is published.

        Returns ``False`` on timeout. Callers must check the log first: only records published
        after this call starts wake it.
        """
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def listener(records: Sequence[Record]) -> None:
            if not woken.done() and records[-1].seq > after_seq:
                woken.set_result(None)

        self.add_listener(stream_id, listener)
        try:
            await asyncio.wait_for(woken, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self.remove_listener(stream_id, listener)
