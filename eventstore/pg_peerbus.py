"""The peer bus's PostgreSQL transport: frames as NOTIFY payloads on their own channel.

Frames (:mod:`eventstore.peerbus`) are base64 text (a NOTIFY payload is text, under 8000
bytes: a 4 KiB payload's frame is about 5.7 KB encoded) on :data:`BUS_CHANNEL`, apart from the
commit hints' channel so that neither side parses the other's payloads. They are sent by one
task, in order, batched into one ``pg_notify`` statement per round trip on a pooled
connection, outside any append transaction (like the commit hints); they are received on the
store's existing LISTEN connection. The queue is bounded in bytes: past the bound a frame is
dropped (the bus is best effort, and its heartbeats re-send all state).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from eventstore.errors import StoreError

log = logging.getLogger(__name__)

BUS_CHANNEL = "ringlog_peers"
"""The LISTEN/NOTIFY channel of the peer bus; payloads are base64 frames."""

OUTBOX_BYTES = 256 * 1024
"""Encoded frames waiting to be sent, in bytes at most."""

BUS_NOTIFY = f"SELECT pg_notify('{BUS_CHANNEL}', frame) FROM unnest($1::text[]) WITH ORDINALITY AS f (frame, n) ORDER BY n"
"""One statement that sends a batch of frames (``$1``: text[]) in order."""


class NotifyOutbox:
    """Frames waiting for their NOTIFY; ``send`` never blocks (see the module doc).

    ``run_notify(texts)`` sends a batch (the store's pooled ``execute`` with error mapping);
    a :class:`StoreError` drops that batch with a log line.
    """

    def __init__(self, run_notify: Callable[[list[str]], Any], max_bytes: int = OUTBOX_BYTES) -> None:
        self._run_notify = run_notify
        self._max_bytes = max_bytes
        self._queue: deque[str] = deque()
        self._bytes = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.dropped = 0
        """Frames dropped because the outbox was full."""

    def send(self, frame: bytes) -> None:
        """Queue ``frame`` for every other node (dropped if the outbox is full or closed)."""
        text = base64.b64encode(frame).decode("ascii")
        if self._closed or self._bytes + len(text) > self._max_bytes:
            self.dropped += 1
            return
        self._queue.append(text)
        self._bytes += len(text)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="ringlog-pg-peer-bus")

    async def _drain(self) -> None:
        while self._queue:
            batch = list(self._queue)
            self._queue.clear()
            self._bytes = 0
            try:
                await self._run_notify(batch)
            except StoreError as e:
                log.warning("peer bus: could not send %d frames: %r", len(batch), str(e))

    async def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (for ``timeout`` seconds at most), then refuse more."""
        self._closed = True
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except (TimeoutError, StoreError):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, StoreError):
                await task


def frame_listener(receive: Callable[[bytes], None]) -> Callable[[Any, int, str, str], None]:
    """An asyncpg notification callback that hands decoded frames to ``receive``.

    A payload that is not base64 is handed on as empty bytes, which the bus counts and logs as
    a bad frame.
    """

    def on_notification(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            frame = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            frame = b""
        receive(frame)

    return on_notification
