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

log = logging.getLogger(__name__)

DISCOVERY_PAGE = 1000
"""Records read per query by commit discovery."""

_marker_numbers = itertools.count(1)


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

    ``on_wake`` is called on the event loop when another process says it committed.
    """

    def __init__(self, db_path: str, on_wake: Callable[[], None]) -> None:
        real = os.path.realpath(db_path)
        self.directory = real + ".peers"
        self._key = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:24]
        self._on_wake = on_wake
        self._sock: socket.socket | None = None
        self._marker = ""
        self._loop: asyncio.AbstractEventLoop | None = None

    def _address(self, marker: str) -> bytes:
        return f"\0ringlog-{self._key}-{marker}".encode()

    def open(self) -> None:
        """Bind this process's socket, then leave its marker (raises OSError)."""
        os.makedirs(self.directory, exist_ok=True)
        marker = f"{os.getpid()}.{next(_marker_numbers)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(self._address(marker))
            with open(os.path.join(self.directory, marker), "w"):
                pass
        except OSError:
            sock.close()
            raise
        self._sock, self._marker = sock, marker
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                sock.recv(64)
        self._on_wake()

    def notify(self) -> None:
        """Tell every other process serving the file that the log moved (never blocks)."""
        sock = self._sock
        if sock is None:
            return
        try:
            peers = os.listdir(self.directory)
        except OSError:
            return
        for marker in peers:
            if marker == self._marker:
                continue
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

    def close(self) -> None:
        """Stop listening and remove this process's marker (idempotent)."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock.fileno())
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.directory, self._marker))
        sock.close()
