"""Fan-out of committed events to WebSocket subscribers, and the catch-up→live seam.

* Each event is framed once (its canonical JSON body in an unmasked WebSocket text frame) and the
  same bytes are written to every socket: no per-socket serialisation. Compression is never
  negotiated, so frames are identical for all sockets.
* Fast path: a socket that keeps up gets the frame written straight to its transport, in the
  notifier callback, with no task switch. A socket whose transport buffer is above the
  high-water mark falls back to its own bounded backlog and writer task, so one slow socket never
  delays another; a backlog that overflows closes the socket with 1013 (the client resumes with
  ``since``).
* The seam: a subscriber is registered (buffering live events, bounded) *before* it catches up
  from the log; after catch-up, the buffer is drained skipping seqs already sent, and if it
  overflowed the log is read again. The switch to live happens with no await in between, so no
  event can fall between catch-up and live, and none is sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from eventstore.events import Record
from eventstore.notifier import Notifier
from eventstore.store import DraftBodyReader, Store

log = logging.getLogger(__name__)

CATCH_UP_PAGE = 1000
HIGH_WATER = 256 * 1024
"""Bytes in a socket's transport buffer above which it is 'behind' and gets a backlog."""

CLOSE_TRY_AGAIN_LATER = 1013


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final WebSocket text frame (RFC 6455 §5.2) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


_HEADER_16 = struct.Struct("!BBH").pack


def text_frames(bodies: Sequence[tuple[int, bytes]]) -> bytes:
    """The ``(seq, body)`` pairs' bodies as consecutive text frames, in one buffer.

    Same bytes as joining :func:`text_frame` of each, with one copy of each body instead of two.
    """
    parts: list[bytes] = []
    append = parts.append
    for _, body in bodies:
        n = len(body)
        if 126 <= n < 65536:
            append(_HEADER_16(0x81, 126, n))
            append(body)
        else:
            append(text_frame(body))
    return b"".join(parts)


class Subscriber:
    """One socket's delivery state: catching up or live, with a bounded backlog."""

    def __init__(
        self,
        draft_id: str,
        transport: asyncio.Transport,
        on_overflow: Callable[[Subscriber], None],
        max_backlog: int,
        observe_lag: Callable[[float], None] | None = None,
    ) -> None:
        self.draft_id = draft_id
        self.transport = transport
        self._on_overflow = on_overflow
        self.max_backlog = max_backlog
        self._observe_lag = observe_lag
        self.live = False
        self.closed = False
        self.last_seq = 0
        self.pending: deque[Record] = deque()
        self.pending_overflowed = False
        self._pending_wakeup: asyncio.Event = asyncio.Event()
        self.backlog: deque[tuple[bytes, float]] = deque()
        self._writer: asyncio.Task[None] | None = None
        self.resync: Callable[[], None] | None = None

    # -- called by the channel on every commit --------------------------------------------

    def offer(self, records: Sequence[Record], frames: Sequence[bytes], stamp: float) -> None:
        """New committed records of this draft (in seq order)."""
        if self.closed:
            return
        if not self.live:
            if len(self.pending) + len(records) > self.max_backlog:
                self.pending.clear()
                self.pending_overflowed = True
            else:
                self.pending.extend(records)
            self._pending_wakeup.set()
            return
        start = 0
        while start < len(records) and records[start].seq <= self.last_seq:
            start += 1  # already sent (a hint that repeated records)
        if start == len(records):
            return
        if records[start].seq != self.last_seq + 1:
            self.live = False  # a gap: read the log from last_seq before going live again
            if self.resync is not None:
                self.resync()
            return
        self.last_seq = records[-1].seq
        self._deliver(frames[start] if len(frames) - start == 1 else b"".join(frames[start:]), stamp)

    def _deliver(self, data: bytes, stamp: float) -> None:
        if not self.backlog and self.transport.get_write_buffer_size() < HIGH_WATER:
            if self.transport.is_closing():
                self.closed = True
                return
            self.transport.write(data)
            if self._observe_lag is not None:
                self._observe_lag(time.monotonic() - stamp)
            return
        if len(self.backlog) >= self.max_backlog:
            self.closed = True
            self.backlog.clear()
            self._on_overflow(self)
            return
        self.backlog.append((data, stamp))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain_backlog())

    async def _drain_backlog(self) -> None:
        """Write the backlog, waiting for the transport to drain between writes."""
        try:
            while self.backlog and not self.closed:
                chunk: list[bytes] = []
                size = 0
                stamps: list[float] = []
                while self.backlog and size < HIGH_WATER:
                    data, stamp = self.backlog.popleft()
                    chunk.append(data)
                    stamps.append(stamp)
                    size += len(data)
                await self._send_raw(b"".join(chunk))
                if self._observe_lag is not None:
                    now = time.monotonic()
                    for stamp in stamps:
                        self._observe_lag(now - stamp)
        except (ConnectionError, RuntimeError):
            self.closed = True

    async def _send_raw(self, data: bytes) -> None:
        if self.transport.is_closing():
            raise ConnectionResetError("socket closed")
        self.transport.write(data)
        await self._wait_writable()

    async def _wait_writable(self) -> None:
        # aiohttp's protocol implements asyncio flow control (pause/resume_writing);
        # waiting on it is the transport's own "drained" signal.
        protocol: Any = self.transport.get_protocol()
        drain = getattr(protocol, "_drain_helper", None)
        if drain is not None and self.transport.get_write_buffer_size() >= HIGH_WATER:
            await drain()

    async def send_now(self, frame: bytes) -> None:
        """Write one frame during catch-up, waiting (not overflowing) when the socket is slow."""
        if self.backlog:
            await self.flush()
        await self._send_raw(frame)

    async def flush(self) -> None:
        """Wait until the backlog is written."""
        while self._writer is not None and not self._writer.done():
            await self._writer

    async def wait_pending(self, timeout: float) -> None:
        """Wait until a live record is buffered (or ``timeout``)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pending_wakeup.wait(), timeout)
        self._pending_wakeup.clear()

    def stop(self) -> None:
        """Stop delivering; cancel the backlog writer."""
        self.closed = True
        self.backlog.clear()
        if self._writer is not None:
            self._writer.cancel()


class Hub:
    """Per-draft channels of subscribers, fed by the store's notifier."""

    def __init__(self, store: Store, observe_lag: Callable[[float], None] | None = None) -> None:
        self.store = store
        self.notifier: Notifier = store.notifier
        self.observe_lag = observe_lag
        self._channels: dict[str, set[Subscriber]] = {}
        self._listeners: dict[str, Callable[[Sequence[Record]], None]] = {}
        self._read_bodies: Callable[[str, int, int], Awaitable[list[tuple[int, bytes]]]] = (
            store.read_draft_bodies if isinstance(store, DraftBodyReader) else self._bodies_from_records
        )

    async def _bodies_from_records(
        self, draft_id: str, after_seq: int, limit: int
    ) -> list[tuple[int, bytes]]:
        return [(r.seq, r.body) for r in await self.store.read(draft_id, after_seq, limit)]

    @property
    def subscriber_count(self) -> int:
        """Sockets subscribed across all drafts."""
        return sum(len(s) for s in self._channels.values())

    def subscribe(self, sub: Subscriber) -> None:
        """Start buffering ``sub``'s draft's live records (call before catching up)."""
        subs = self._channels.get(sub.draft_id)
        if subs is None:
            subs = self._channels[sub.draft_id] = set()
            listener = self._make_listener(subs)
            self._listeners[sub.draft_id] = listener
            self.notifier.add_listener(sub.draft_id, listener)
        subs.add(sub)

    def unsubscribe(self, sub: Subscriber) -> None:
        """Stop delivering to ``sub``."""
        sub.stop()
        subs = self._channels.get(sub.draft_id)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._channels[sub.draft_id]
            listener = self._listeners.pop(sub.draft_id)
            self.notifier.remove_listener(sub.draft_id, listener)

    @staticmethod
    def _make_listener(subs: set[Subscriber]) -> Callable[[Sequence[Record]], None]:
        def on_records(records: Sequence[Record]) -> None:
            stamp = time.monotonic()
            frames = [text_frame(r.body) for r in records]  # framed once for every socket
            for sub in tuple(subs):
                sub.offer(records, frames, stamp)

        return on_records

    async def catch_up_then_live(self, sub: Subscriber, since: int) -> None:
        """Send every record after ``since`` from the log, then switch ``sub`` to live.

        ``sub`` must already be subscribed, so records committed meanwhile are buffered.
        """
        after = since
        read = self._read_bodies  # (seq, body) only: no Record per row
        prefetch: asyncio.Future[list[tuple[int, bytes]]] | None = None
        try:
            while not sub.closed:
                if prefetch is None:
                    page = await read(sub.draft_id, after, CATCH_UP_PAGE)
                else:
                    page, prefetch = await prefetch, None
                if page:
                    after = page[-1][0]
                    if len(page) == CATCH_UP_PAGE:
                        # read the next page while this one drains: the socket never waits on SQLite
                        prefetch = asyncio.ensure_future(read(sub.draft_id, after, CATCH_UP_PAGE))
                    # one write per page: a socket catching up is behind by definition
                    await sub.send_now(text_frames(page))
                if len(page) == CATCH_UP_PAGE:
                    continue
                if self._go_live(sub, after):
                    return
        finally:
            if prefetch is not None:
                prefetch.cancel()

    @staticmethod
    def _go_live(sub: Subscriber, after: int) -> bool:
        """Send the buffered live records after ``after`` and switch to live.

        False when the buffer overflowed or has a gap: the caller reads the log again from
        ``after`` (nothing buffered was sent, so nothing is skipped).
        """
        if sub.pending_overflowed:
            sub.pending_overflowed = False
            sub.pending.clear()
            return False
        # No await from here to `live = True`: nothing can slip between log and live.
        frames: list[bytes] = []
        while sub.pending:
            record = sub.pending.popleft()
            if record.seq <= after:
                continue
            if record.seq != after + 1:
                sub.pending.clear()
                return False
            frames.append(text_frame(record.body))
            after = record.seq
        sub.last_seq = after
        sub.live = True
        if frames:
            sub._deliver(b"".join(frames), time.monotonic())
        return True
