"""An in-memory :class:`server.subscriber.Sink` and helpers to read what reached it (no sockets)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from eventstore import NewEvent
from eventstore.memory import MemoryStore
from server.subscriber import HIGH_WATER, DirectWriter, SinkClosed

TS = "2025-12-23T20:30:45.123Z"


class TaskOwner:
    """Owns the tasks the subscribers spawn (like a socket's SocketTasks) and records close requests."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.spawned = 0
        self.closes: list[tuple[int, bytes]] = []
        self.failures: list[BaseException] = []

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failures.append(task.exception())  # type: ignore[arg-type]

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        self.spawned += 1
        return task

    def request_close(self, code: int, reason: bytes) -> None:
        self.closes.append((code, reason))

    async def idle(self) -> None:
        """Wait until every task has finished (and re-raise a failure)."""
        while self.tasks:
            await asyncio.gather(*self.tasks)

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()


class FakeSink:
    """A socket as the subscriber sees it: a send buffer that a fake network empties.

    ``auto_drain`` sends every write at once (a client that keeps up); without it, writes stay
    in :attr:`buffered` until :meth:`drain` (a client that does not read). ``writes`` keeps each
    written object, to check that the same frame bytes went to every socket.

    With ``direct`` (the default) it takes the hub lane's direct writes as a transport would:
    it is its own :class:`DirectWriter`, and it calls ``on_stop`` when it starts closing or when
    a write leaves more than ``HIGH_WATER`` bytes pending (a transport's ``pause_writing``).
    ``direct_writes`` counts the writes that came that way.
    """

    def __init__(self, auto_drain: bool = True, low_water: int = 0, direct: bool = True) -> None:
        self.auto_drain = auto_drain
        self.low_water = low_water
        self.direct = direct
        self.sent = bytearray()
        self.pending = bytearray()
        self.writes: list[bytes] = []
        self.refused = 0
        self.direct_writes = 0
        self._closing = False
        self._on_stop: Callable[[], None] | None = None
        self._changed = asyncio.Event()

    def write(self, data: bytes) -> None:
        if self._closing:
            self.refused += 1
            raise SinkClosed("closing")
        self.writes.append(data)
        (self.sent if self.auto_drain else self.pending).extend(data)
        self._wake()
        if len(self.pending) > HIGH_WATER:
            self._stop_direct()

    def is_closing(self) -> bool:
        return self._closing

    def attach_direct(self, on_stop: Callable[[], None]) -> DirectWriter | None:
        if not self.direct or self._on_stop is not None or self._closing or len(self.pending) > HIGH_WATER:
            return None
        self._on_stop = on_stop
        return _Counted(self)

    def detach_direct(self) -> None:
        self._on_stop = None

    def _stop_direct(self) -> None:
        on_stop, self._on_stop = self._on_stop, None
        if on_stop is not None:
            on_stop()

    @property
    def buffered(self) -> int:
        return len(self.pending)

    @property
    def closing(self) -> bool:
        return self._closing

    def start_closing(self) -> None:
        self._closing = True
        self._stop_direct()
        self._wake()

    async def writable(self) -> None:
        while not self._closing and len(self.pending) > self.low_water:
            await self._wait()

    def drain(self, n: int | None = None) -> None:
        """The peer reads ``n`` bytes (all by default)."""
        n = len(self.pending) if n is None else n
        self.sent.extend(self.pending[:n])
        del self.pending[:n]
        self._wake()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (event-driven, bounded) until ``predicate()`` holds after some write or drain."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._wait()

    def seqs(self) -> list[int]:
        """The ``seq`` of every complete event frame sent so far."""
        return [event["seq"] for event in decode_frames(bytes(self.sent))]

    async def _wait(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    def _wake(self) -> None:
        self._changed.set()


class _Counted:
    """A :class:`FakeSink`'s direct writer: its own ``write``, counted."""

    def __init__(self, sink: FakeSink) -> None:
        self.sink = sink

    def write(self, data: bytes, /) -> None:
        self.sink.direct_writes += 1
        self.sink.write(data)

    def is_closing(self) -> bool:
        return self.sink.is_closing()


def decode_frames(data: bytes) -> list[dict[str, object]]:
    """Parse unmasked server text frames (RFC 6455 §5.2); a trailing partial frame is ignored."""
    out: list[dict[str, object]] = []
    i = 0
    while i + 2 <= len(data):
        assert data[i] == 0x81, f"not a final text frame at byte {i}"
        n = data[i + 1]
        header = 2
        if n == 126:
            if i + 4 > len(data):
                break
            (n,) = struct.unpack_from("!H", data, i + 2)
            header = 4
        elif n == 127:
            if i + 10 > len(data):
                break
            (n,) = struct.unpack_from("!Q", data, i + 2)
            header = 10
        if i + header + n > len(data):
            break
        out.append(orjson.loads(data[i + header : i + header + n]))
        i += header + n
    return out


async def append(store: MemoryStore, draft_id: str, count: int = 1, size: int = 10) -> int:
    """Append ``count`` events of about ``size`` bytes of content to ``draft_id``; the new head."""
    head = await store.head(draft_id)
    events = [NewEvent("collab.segment_added", "u", TS, {"content": "x" * size}) for _ in range(count)]
    result = await store.append(draft_id, events, head)
    return result.records[-1].seq
