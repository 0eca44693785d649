"""Commit discovery on one SQLite file served by several processes.

Several ``ringlog serve`` processes (the workers of ``--workers N``, or separate servers) may
append to one SQLite log; SQLite serialises their write transactions, so positions are handed
out in commit order with no hole (the schema's trigger refuses any other). Each process must
still *learn* of the others' commits, to feed its projector, long-polls and sockets: that is
commit discovery, the same job :mod:`eventstore.postgres` does for nodes, in two parts here.

:class:`CommitCursor`
    The position up to which this process has published records to its notifier. Records are
    published only contiguously from it: a local commit that starts after a hole (another
    process committed in between) first reads the hole from the log; records already published
    (discovered before our own publish ran) are skipped. Hence every listener gets every record
    once, in position order, whichever process appended it.

:class:`PeerWakeups`
    How a process hears that another one committed: after each commit a process sends a one-byte
    datagram to every other process serving the file (UNIX datagram sockets in Linux's abstract
    namespace, named by a hash of the database's real path and the receiver's pid; each live
    receiver leaves a marker file ``<pid>.<n>`` in the directory ``<db>.peers`` so that senders
    can find it). A wake-up is only a hint: the receiver reads the log. A periodic check (every
    ``poll_interval`` seconds) covers a lost datagram and a peer that started after the send.

Measured on the benchmark machine (docs/BENCHMARKS.md, "More than one process"): a datagram
wake-up makes cross-process delivery cost one extra read of the log's tail, where polling
``PRAGMA data_version`` or ``MAX(position)`` on a short interval costs CPU in every idle process
and adds half an interval to every delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence

from eventstore.errors import StoreError
from eventstore.events import Record
from eventstore.notifier import Notifier
from eventstore.peerbus import MAX_FRAME

log = logging.getLogger(__name__)

DISCOVERY_PAGE = 1000
"""Records read per query by commit discovery."""

_marker_numbers = itertools.count(1)

BUS_DATAGRAM = b"RLBD"
"""First bytes of a peer bus datagram: then, per frame, its length (2 bytes, big endian) and it."""

BUS_DATAGRAM_BYTES = 60 * 1024
"""Bytes in one bus datagram at most (the frames of one loop turn, more datagrams past it)."""

BUS_OUTBOX_BYTES = 256 * 1024
"""Bus frames waiting for the end of the loop turn, in bytes at most (more are dropped)."""

_BUS_READS_PER_WAKE = 64
"""Bus datagrams read per readable event at most (the loop gets its turn back)."""


def split_bus_datagram(datagram: bytes) -> tuple[list[bytes], bool]:
    """The frames of a bus datagram, and whether it was well formed (a garbled tail is dropped)."""
    frames: list[bytes] = []
    at = len(BUS_DATAGRAM)
    if not datagram.startswith(BUS_DATAGRAM):
        return frames, False
    while at < len(datagram):
        if at + 2 > len(datagram):
            return frames, False
        size = int.from_bytes(datagram[at : at + 2], "big")
        at += 2
        if size == 0 or at + size > len(datagram):
            return frames, False
        frames.append(datagram[at : at + size])
        at += size
    return frames, True


class CommitCursor:
    """Publishes committed records to a notifier contiguously by position, each exactly once.

    ``read_after(position, limit)`` reads committed records with larger positions in position
    order (the store's ``read_all``). Every method runs on the event loop.
    """

    def __init__(self, notifier: Notifier, read_after: Callable[[int, int], Awaitable[list[Record]]]) -> None:
        self.notifier = notifier
        self.position = 0
        """The global position up to which records have been published."""
        self._read_after = read_after
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._wanted = False
        self._closing = False

    async def publish_local(self, records: Sequence[Record]) -> None:
        """Publish a commit of this process, after any earlier commits not yet published."""
        if records and records[0].position > self.position + 1:
            try:
                await self.discover()
            except StoreError as e:
                log.warning("could not read other processes' records before publishing ours: %r", str(e))
                self.schedule()
                return
        self.deliver(records)

    def deliver(self, records: Sequence[Record]) -> None:
        """Publish the records that continue the cursor; a hole schedules a read of the log.

        Runs without awaiting, so the cursor check and the publish cannot interleave.
        """
        expected = self.position + 1
        start = 0
        while start < len(records) and records[start].position < expected:
            start += 1
        end = start
        while end < len(records) and records[end].position == expected:
            end += 1
            expected += 1
        if end < len(records):
            self.schedule()  # a hole: read it from the log rather than skip it
        if end == start:
            return
        fresh = records[start:end]
        self.position = fresh[-1].position
        self.notifier.publish(fresh)

    async def discover(self) -> None:
        """Commit discovery: publish every committed record after :attr:`position`."""
        async with self._lock:
            while True:
                page = await self._read_after(self.position, DISCOVERY_PAGE)
                self.deliver(page)
                if len(page) < DISCOVERY_PAGE:
                    return

    def schedule(self) -> None:
        """Run :meth:`discover` soon (once, however often it is asked for meanwhile)."""
        if self._closing:
            return
        self._wanted = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="ringlog-discover")

    async def _loop(self) -> None:
        while self._wanted and not self._closing:
            self._wanted = False
            try:
                await self.discover()
            except StoreError as e:  # the periodic check runs it again
                log.warning("commit discovery could not read the log (will retry): %r", str(e))
                return

    async def close(self) -> None:
        """Stop scheduling discoveries and wait for the one running."""
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class PeerWakeups:
    """The datagram channel between the processes serving one SQLite file (see the module doc).

    ``on_wake`` is called on the event loop when another process says it committed;
    ``on_frame(frame)`` for every peer bus frame another process sent (:meth:`broadcast`), and
    with empty bytes for a bus datagram that does not parse (the bus counts and logs it).
    """

    def __init__(
        self,
        db_path: str,
        on_wake: Callable[[], None],
        on_frame: Callable[[bytes], None] | None = None,
    ) -> None:
        real = os.path.realpath(db_path)
        self.directory = real + ".peers"
        self._key = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:24]
        self._on_wake = on_wake
        self._on_frame = on_frame
        self._sock: socket.socket | None = None
        self._bus_sock: socket.socket | None = None
        self._marker = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._flush_handle: asyncio.Handle | None = None
        self.bus_frames_dropped = 0
        """Bus frames not sent: the outbox was full, or a peer's queue was."""

    def _address(self, marker: str) -> bytes:
        return f"\0ringlog-{self._key}-{marker}".encode()

    def bus_address(self, marker: str) -> bytes:
        """The abstract socket name of a process's peer bus socket (by its marker)."""
        return f"\0ringlog-{self._key}-{marker}-bus".encode()

    def open(self) -> None:
        """Bind this process's socket, then leave its marker (raises OSError)."""
        os.makedirs(self.directory, exist_ok=True)
        marker = f"{os.getpid()}.{next(_marker_numbers)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bus_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(self._address(marker))
            bus_sock.setblocking(False)
            bus_sock.bind(self.bus_address(marker))
            with open(os.path.join(self.directory, marker), "w"):
                pass
        except OSError:
            sock.close()
            bus_sock.close()
            raise
        self._sock, self._bus_sock, self._marker = sock, bus_sock, marker
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)
        self._loop.add_reader(bus_sock.fileno(), self._bus_readable)

    @property
    def marker(self) -> str:
        """This process's marker file name (``<pid>.<n>``), empty until opened."""
        return self._marker

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                sock.recv(64)
        self._on_wake()

    def _bus_readable(self) -> None:
        sock = self._bus_sock
        if sock is None:
            return
        datagrams: list[bytes] = []
        with contextlib.suppress(BlockingIOError, InterruptedError):
            for _ in range(_BUS_READS_PER_WAKE):
                datagrams.append(sock.recv(BUS_DATAGRAM_BYTES + 1))
        if self._on_frame is None:
            return
        for datagram in datagrams:
            frames, whole = split_bus_datagram(datagram)
            for frame in frames:
                self._on_frame(frame)
            if not whole:
                self._on_frame(b"")  # garbled: counted and logged by the bus

    def broadcast(self, frame: bytes) -> None:
        """Queue a peer bus frame for every other process; sent at the end of this loop turn.

        Never blocks; a frame over :data:`eventstore.peerbus.MAX_FRAME` bytes, or past
        :data:`BUS_OUTBOX_BYTES` waiting, is dropped (the bus is best effort).
        """
        if self._bus_sock is None or self._loop is None:
            return
        if len(frame) > MAX_FRAME or self._outbox_bytes + len(frame) > BUS_OUTBOX_BYTES:
            self.bus_frames_dropped += 1
            return
        self._outbox.append(frame)
        self._outbox_bytes += len(frame) + 2
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush_bus)

    def _flush_bus(self) -> None:
        self._flush_handle = None
        frames, self._outbox, self._outbox_bytes = self._outbox, [], 0
        sock = self._bus_sock
        if sock is None or not frames:
            return
        datagrams: list[bytes] = []
        parts = [BUS_DATAGRAM]
        size = len(BUS_DATAGRAM)
        for frame in frames:
            if size + 2 + len(frame) > BUS_DATAGRAM_BYTES:
                datagrams.append(b"".join(parts))
                parts, size = [BUS_DATAGRAM], len(BUS_DATAGRAM)
            parts += (len(frame).to_bytes(2, "big"), frame)
            size += 2 + len(frame)
        datagrams.append(b"".join(parts))
        for marker in self._peer_markers():
            for datagram in datagrams:
                try:
                    sock.sendto(datagram, self.bus_address(marker))
                except (BlockingIOError, InterruptedError):
                    self.bus_frames_dropped += 1  # its queue is full: the next heartbeat re-sends state
                    break
                except (ConnectionRefusedError, FileNotFoundError):
                    break  # gone, or an older process without a bus socket: notify() tidies markers
                except OSError as e:
                    log.debug("peer bus datagram to %s failed: %s", marker, e)
                    break

    def notify(self) -> None:
        """Tell every other process serving the file that the log moved (never blocks)."""
        sock = self._sock
        if sock is None:
            return
        for marker in self._peer_markers():
            try:
                sock.sendto(b"!", self._address(marker))
            except (BlockingIOError, InterruptedError):
                pass  # its queue is full: it has wake-ups pending already
            except (ConnectionRefusedError, FileNotFoundError):
                # nobody bound that name: the process is gone (markers are made after binding)
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.directory, marker))
            except OSError as e:
                log.debug("wake-up to %s failed: %s", marker, e)

    def _peer_markers(self) -> list[str]:
        """The other processes' marker names in the directory ([] when it cannot be listed)."""
        try:
            return [m for m in os.listdir(self.directory) if m != self._marker]
        except OSError:
            return []

    def close(self) -> None:
        """Send the bus frames still queued, stop listening, remove this process's marker (idempotent)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_bus()  # a goodbye queued in this turn still goes out
        sock, self._sock = self._sock, None
        bus_sock, self._bus_sock = self._bus_sock, None
        if sock is None:
            return
        for s in (sock, bus_sock):
            if s is not None and self._loop is not None and not self._loop.is_closed():
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(s.fileno())
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.directory, self._marker))
        sock.close()
        if bus_sock is not None:
            bus_sock.close()
