"""One socket's subscription to one stream: the seam, a sink to write to, a backlog bounded in bytes.

* A socket that keeps up gets each batch's frames written straight to its :class:`Sink` in the
  notifier callback, with no task switch; on a socket of its own, once live with nothing queued,
  the stream's lane (:class:`server.hub.Fanout`) takes over and writes them to its transport. A socket whose sink holds more than ``HIGH_WATER``
  unsent bytes gets a backlog and a writer task instead, so one slow socket never delays
  another; a backlog that would exceed its bound (bytes, and events) closes the socket with
  1013 (API.md "WebSocket" item 6: the client resumes with ``since``).
* Catch-up (the socket's replay of the log after ``since``) never overflows: it writes a page,
  then waits until the sink is writable again.
* Once the subscriber is closing (any close reason), it writes nothing more.
* With a :class:`~projections.access.ViewAccess` (the socket's user's access at admission), it
  folds the removals it forwards: when one takes the user's view access away, the subscriber
  delivers the events up to and including it and nothing after, then (once those bytes are
  handed to the sink) calls ``request_close(4403, …)`` — API.md v2 "Revocation is live". The
  decision is taken from the stream itself, so every node decides it at the same seq.

The sink is a small protocol so that the subscriber is tested with an in-memory fake;
:class:`TransportSink` is the real one, over an asyncio transport, using only public API
(``write``, ``get_write_buffer_size``, ``set_write_buffer_limits`` and the protocol's
``pause_writing``/``resume_writing`` calls, observed by :class:`FlowObserver`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_websocket import WSCloseCode

from projections.access import REMOVAL_MARKER, ViewAccess
from server.frames import Batch, text_frames
from server.pages import FramedPages, KeptPage
from server.seam import RESYNC, CatchUpSeam, LogGap

log = logging.getLogger(__name__)

CLOSE_TRY_AGAIN_LATER = 1013
"""RFC 6455 §7.4.1 "Try Again Later": the socket fell too far behind (API.md "WebSocket" item 6)."""
CLOSE_INTERNAL_ERROR = 1011
"""RFC 6455 §7.4.1 "Internal Error": the log read back is not contiguous."""
CLOSE_ACCESS_REVOKED = 4403
"""API.md v2 "Revocation is live": the socket's user lost view access (clients do not reconnect)."""

HIGH_WATER = 256 * 1024
"""Unsent bytes in a socket's sink above which it is 'behind': writes go to its backlog."""

NOT_AN_EVENT = -1.0
"""The commit stamp of a queued frame that is not an event (presence): no fan-out lag observed."""

CATCH_UP_PAGE = 1000
"""Events per log read during catch-up."""

ReadPage = Callable[[str, int, int], Awaitable[list[tuple[int, bytes]]]]
"""``read(stream_id, after_seq, limit)`` → ``(seq, body)`` pairs, oldest first."""

RequestClose = Callable[[int, bytes], None]
"""Asks the socket's handler to close with ``(code, reason)``; the subscriber is already closed."""

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]
"""Starts a coroutine as a task owned by the socket (cancelled when the socket ends)."""


class Lane(Protocol):
    """The stream's lane as a subscriber in it sees it (:class:`server.hub.Fanout`)."""

    @property
    def position(self) -> int:
        """The seq of the last event written to every member."""
        ...

    def leave(self, sub: Subscriber, /) -> None:
        """Hand ``sub``'s delivery back to it (:meth:`Subscriber.left_lane`); nothing if not a member."""
        ...


class SinkClosed(ConnectionError):
    """A write to a sink that is closing: nothing but the close may follow a decision to close."""


class DirectWriter(Protocol):
    """What the stream's lane writes to (an asyncio transport): no check but :meth:`is_closing`."""

    def write(self, data: bytes, /) -> None:
        """Queue ``data`` for sending."""
        ...

    def is_closing(self) -> bool:
        """True once the connection is closing: nothing may be written."""
        ...


class Sink(Protocol):
    """Where a subscriber writes: one socket's outgoing bytes (already framed, RFC 6455 §5.2)."""

    def write(self, data: bytes) -> None:
        """Queue ``data`` for sending; raises :class:`SinkClosed` once :attr:`closing`."""
        ...

    @property
    def buffered(self) -> int:
        """Bytes written but not yet sent."""
        ...

    @property
    def closing(self) -> bool:
        """True once the socket is closing: no write is accepted any more."""
        ...

    async def writable(self) -> None:
        """Return when the sink can take more (its buffer has drained) or is closing."""
        ...

    def attach_direct(self, on_stop: Callable[[], None]) -> DirectWriter | None:
        """Let the stream's lane write straight to the connection, or None if it may not now.

        From this call until ``on_stop()`` (called once, synchronously, the moment the sink
        stops taking direct writes: it starts closing, or its connection pauses writing because
        more than its high-water mark is unsent) or :meth:`detach_direct`, a write that
        ``is_closing()`` does not refuse is one the sink would have accepted. None while
        closing, paused, already attached, or for a sink without that guarantee.
        """
        ...

    def detach_direct(self) -> None:
        """Forget the ``on_stop`` of :meth:`attach_direct` (no call); nothing if not attached."""
        ...


class FlowObserver(asyncio.Protocol):
    """Stands between a transport and its protocol to see ``pause_writing``/``resume_writing``.

    Every call is passed on to the wrapped protocol (aiohttp's own flow control keeps working);
    the observer only remembers whether writing is paused and wakes whoever waits for resume.
    """

    __slots__ = ("_resumed", "inner", "on_stop", "paused")

    def __init__(self, inner: asyncio.BaseProtocol) -> None:
        self.inner = inner
        self.paused = False
        self.on_stop: Callable[[], None] | None = None
        """Called when writing pauses or the connection is lost (the sink's direct writes stop)."""
        self._resumed: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.paused = False
        self._wake()
        if self.on_stop is not None:
            self.on_stop()
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool | None:
        result: bool | None = self.inner.eof_received()  # type: ignore[attr-defined]
        return result

    def pause_writing(self) -> None:
        self.paused = True
        if self.on_stop is not None:  # synchronously, inside the transport's write
            self.on_stop()
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()
        self.inner.resume_writing()

    async def resumed(self) -> None:
        """Wait until writing is resumed (or the connection is lost); at once if not paused."""
        if not self.paused:
            return
        if self._resumed is None or self._resumed.done():
            self._resumed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._resumed)

    def _wake(self) -> None:
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)


class Closable(Protocol):
    """The WebSocket the sink belongs to: ``closed`` turns true as its Close frame is sent."""

    @property
    def closed(self) -> bool: ...


class DeliverySocket(web.WebSocketResponse):
    """aiohttp's WebSocket response that tells its sink *before* it sends a Close frame.

    aiohttp closes a socket on its own from inside ``receive()`` (a protocol error such as 1007
    or 1009, the end of the stream), long before the handler hears of it; every Close frame it
    sends goes through :meth:`close` (a missed heartbeat closes the transport instead). Calling
    ``before_close`` first thing there lets a :class:`TransportSink` stop at that moment, so
    that the stream's lane, which checks nothing per write but the transport's ``is_closing()``,
    writes no event after the frame (issue 16: ``closed`` is a Python property, one call per
    socket and event otherwise).

    ``before_close`` is a slot: as a key added to the instance's ``__dict__`` after aiohttp's own
    it cost 1.6 KiB more RSS per idle socket (``bench.py --only connections --quick``).
    """

    __slots__ = ("before_close",)

    def __init__(self, **options: Any) -> None:
        """aiohttp's ``WebSocketResponse(**options)``, with no ``before_close`` yet."""
        super().__init__(**options)
        self.before_close: Callable[[], None] | None = None

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        """Call ``before_close`` (once), then aiohttp's ``close``."""
        hook = self.before_close
        if hook is not None:
            self.before_close = None
            hook()
        return await super().close(code=code, message=message, drain=drain)


class TransportSink:
    """A :class:`Sink` over an asyncio transport (the upgraded WebSocket connection).

    The transport's high-water mark is set to ``high_water`` (its low-water mark is asyncio's
    default, a quarter of it); :meth:`writable` waits for the transport's own resume signal.
    The sink is closing once :meth:`start_closing` was called, the transport is closing, or
    ``socket.closed`` is true: aiohttp sets it just before it writes a Close frame of its own
    (a protocol error such as 1007 or 1009), so no event follows that frame either.

    Direct writes (:meth:`attach_direct`: the transport itself) are offered only over a
    :class:`DeliverySocket`, whose ``before_close`` starts the sink closing before aiohttp's
    own Close frame; they stop at :meth:`start_closing`, at the transport's ``pause_writing``
    and at ``connection_lost``, each of which calls the attached ``on_stop`` synchronously.
    """

    __slots__ = ("_closing", "_direct_ok", "_flow", "_on_stop", "socket", "transport")

    def __init__(self, transport: asyncio.Transport, socket: Closable, high_water: int = HIGH_WATER) -> None:
        self.transport = transport
        self.socket = socket
        self._closing = False
        self._on_stop: Callable[[], None] | None = None
        self._direct_ok = isinstance(socket, DeliverySocket)
        if isinstance(socket, DeliverySocket):
            socket.before_close = self.start_closing
        transport.set_write_buffer_limits(high=high_water)
        self._flow = FlowObserver(transport.get_protocol())
        transport.set_protocol(self._flow)

    def write(self, data: bytes) -> None:
        """Write to the transport; :class:`SinkClosed` once closing."""
        if self._closing or self.socket.closed or self.transport.is_closing():
            raise SinkClosed("the socket is closing")
        self.transport.write(data)

    @property
    def buffered(self) -> int:
        """The transport's unsent bytes."""
        return self.transport.get_write_buffer_size()

    @property
    def closing(self) -> bool:
        """True after :meth:`start_closing`, or once the socket or its transport is closing."""
        return self._closing or self.socket.closed or self.transport.is_closing()

    def start_closing(self) -> None:
        """Refuse every write from now on (the close frame is sent by the socket's handler)."""
        self._closing = True
        self._stop_direct()

    def attach_direct(self, on_stop: Callable[[], None]) -> DirectWriter | None:
        """The transport, for direct writes until ``on_stop()`` (see :meth:`Sink.attach_direct`)."""
        if not self._direct_ok or self._on_stop is not None or self.closing or self._flow.paused:
            return None
        self._on_stop = on_stop
        self._flow.on_stop = self._stop_direct
        return self.transport

    def detach_direct(self) -> None:
        """Forget the attached ``on_stop`` without calling it."""
        self._on_stop = None
        self._flow.on_stop = None

    def _stop_direct(self) -> None:
        on_stop = self._on_stop
        if on_stop is not None:
            self.detach_direct()
            on_stop()

    async def writable(self) -> None:
        """Wait until the transport resumes writing (below its low-water mark) or is closing."""
        if not self.closing:
            await self._flow.resumed()


class BacklogBudget:
    """The bytes and events one socket may hold in its subscribers' backlogs, summed over them.

    A per-draft socket has one subscriber and so one budget of its own; a ``/v1/ws`` socket
    shares one budget among all its subscriptions (API.md v2 "One socket, many drafts": a socket
    too slow *for the sum of its drafts* is closed with 1013). Subscribers :meth:`take` before
    appending to their backlog and :meth:`release` what they write or drop.
    """

    __slots__ = ("bytes", "events", "max_bytes", "max_events")

    def __init__(self, max_bytes: int, max_events: int) -> None:
        self.max_bytes = max_bytes
        self.max_events = max_events
        self.bytes = 0
        self.events = 0

    def take(self, size: int, events: int) -> bool:
        """Count ``size`` bytes / ``events`` events in, if both stay within bounds; else False."""
        if self.bytes + size > self.max_bytes or self.events + events > self.max_events:
            return False
        self.bytes += size
        self.events += events
        return True

    def release(self, size: int, events: int) -> None:
        """Count ``size`` bytes / ``events`` events out (written to the sink, or dropped)."""
        self.bytes -= size
        self.events -= events


class Subscriber:
    """One socket's delivery of one stream: catch-up from ``since``, then live, into ``sink``.

    ``max_backlog_bytes`` bounds both the live batches buffered during catch-up (overflow there
    only means reading the log again) and the backlog of a live socket that is behind (overflow
    there closes the subscriber and calls ``request_close(1013, …)``); ``max_backlog_events``
    also bounds the backlog in events (``--ws-queue-size``). With ``budget``, the backlog bound is
    that :class:`BacklogBudget`, shared with the socket's other subscribers (``/v1/ws``); without
    it the subscriber has a budget of its own. ``observe_lag(seconds)`` receives
    the commit→write lag. ``spawn`` runs the writer and catch-up tasks, owned by the socket.
    ``pages``: framed catch-up pages shared by the hub's subscribers (:class:`FramedPages`): a
    catch-up writes the kept ones as they are and keeps the full pages it reads and frames.

    ``settled(self)`` (the hub's :meth:`server.hub.Fanout.join`) is called whenever the subscriber
    is live with nothing queued, so that the stream's lane may take it over: while it is in the
    lane (:meth:`enter_lane` … :meth:`left_lane`) the lane writes its events and keeps its
    position. Only a subscriber with a socket of its own (no ``budget``) is given ``settled``.
    """

    __slots__ = (
        "_access",
        "_backlog",
        "_backlog_bytes",
        "_backlog_events",
        "_budget",
        "_catching_up",
        "_lane",
        "_observe_lag",
        "_pages",
        "_read_page",
        "_request_close",
        "_settled",
        "_spawn",
        "_went_live",
        "_writer",
        "closing",
        "max_backlog_bytes",
        "max_backlog_events",
        "revoked_at",
        "seam",
        "sink",
        "stream_id",
    )

    def __init__(
        self,
        stream_id: str,
        sink: Sink,
        since: int,
        *,
        read_page: ReadPage,
        spawn: Spawn,
        request_close: RequestClose,
        max_backlog_bytes: int,
        max_backlog_events: int,
        observe_lag: Callable[[float], None] | None = None,
        access: ViewAccess | None = None,
        budget: BacklogBudget | None = None,
        went_live: Callable[[str, int], None] | None = None,
        pages: FramedPages | None = None,
        settled: Callable[[Subscriber], None] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self._pages = pages
        self._access = access
        self.revoked_at: int | None = None
        """The seq of the event that took the user's view access away (delivery ends there)."""
        self.sink = sink
        self.seam = CatchUpSeam(since, max_backlog_bytes)
        self.max_backlog_bytes = max_backlog_bytes
        self.max_backlog_events = max_backlog_events
        self.closing = False
        self._read_page = read_page
        self._spawn = spawn
        self._request_close = request_close
        self._observe_lag = observe_lag
        self._went_live = went_live
        # (frames, events, commit stamp); made when the socket first falls behind, dropped once
        # written: most sockets never need one (an empty deque is 760 bytes, issue 16)
        self._backlog: deque[tuple[bytes, int, float]] | None = None
        self._backlog_bytes = 0
        self._backlog_events = 0
        self._budget = budget  # a budget of its own is made with the backlog
        self._writer: asyncio.Task[None] | None = None
        self._catching_up: asyncio.Task[None] | None = None
        self._settled = settled
        self._lane: Lane | None = None  # the lane this subscriber is in (it keeps the position)

    @property
    def backlog_bytes(self) -> int:
        """Bytes waiting in the backlog (not yet written to the sink)."""
        return self._backlog_bytes

    @property
    def position(self) -> int:
        """The seq of the last event handed to the sink (or queued for it): the seam's, or the
        lane's while the subscriber is in it."""
        return self.seam.position if self._lane is None else self._lane.position

    # -- the stream's lane (server.hub.Fanout) --------------------------------------------------

    def enter_lane(self, lane: Lane) -> DirectWriter | None:
        """Hand delivery over to ``lane`` (whose position must be this subscriber's): the sink's
        direct writer, or None if the subscriber is not settled or its sink takes no direct writes.

        From here until :meth:`left_lane` the lane writes the stream's batches and keeps the
        position; the subscriber is offered nothing. It leaves when the sink stops taking direct
        writes (closing, paused: the sink calls back synchronously), or when it closes.
        """
        if (
            self._settled is None
            or self._lane is not None
            or self.closing
            or self.revoked_at is not None
            or not self.seam.live
            or self._backlog
            or self._writer is not None
        ):
            return None
        writer = self.sink.attach_direct(self._lane_stopped)
        if writer is not None:
            self._lane = lane
        return writer

    def left_lane(self, position: int) -> None:
        """Delivery is back with the subscriber, at ``position`` (the lane's, when it left)."""
        self._lane = None
        self.seam.position = position
        self.sink.detach_direct()

    def _lane_stopped(self) -> None:
        lane = self._lane
        if lane is not None:
            lane.leave(self)

    def _settle(self) -> None:
        """Offer this subscriber to the lane if it is live with nothing queued."""
        if (
            self._settled is not None
            and self._lane is None
            and self.seam.live
            and not self._backlog
            and self._writer is None
            and not self.closing
            and self.revoked_at is None
        ):
            self._settled(self)

    # -- the hub calls these ------------------------------------------------------------------

    def start(self, live: bool = False) -> None:
        """Start the catch-up (the subscriber must already receive live batches through ``offer``).

        ``live``: the caller knows every event after ``since`` is still to be offered (the hub's
        live head, :meth:`server.hub.Hub.subscribe`): go live at ``since`` without reading the log.
        """
        if live and not self.seam.buffered_bytes and self.seam.go_live() == b"":
            self._settle()
            return  # nothing was buffered: nothing to write, no task
        self._start_catch_up()

    def offer(self, batch: Batch) -> None:
        """A batch of this stream was just committed (called for every commit, in seq order,
        while the subscriber is not in the stream's lane)."""
        if self.closing or self.revoked_at is not None:
            return
        before = self.seam.position
        out = self.seam.on_live(batch)
        if out is RESYNC:
            self._start_catch_up()
        elif out:
            # most batches hold no removal: no fold (and no call) for them
            cut = self._revocation((batch,), before, self.seam.position) if batch.removals else None
            if cut is not None:
                out = batch.between(before, cut)
            self._deliver(out, (cut or self.seam.position) - before, batch.stamp)
            if cut is not None:
                self._revoke(cut)
        self._settle()

    def offer_message(self, frame: bytes) -> None:
        """Deliver a frame that is not an event (a presence message, API.md v2): no seq, so the
        seam ignores it; it goes through the same byte-bounded sink and backlog as events,
        after whatever is already queued. Nothing once closing or revoked."""
        if self.closing or self.revoked_at is not None:
            return
        self._deliver(frame, 0, NOT_AN_EVENT)

    def close(self) -> None:
        """Stop delivering for good: nothing more is written, the backlog is dropped."""
        self.closing = True
        if self._lane is not None:
            self._lane.leave(self)
        self._backlog = None
        if self._budget is not None:
            self._budget.release(self._backlog_bytes, self._backlog_events)
        self._backlog_bytes = self._backlog_events = 0

    # -- revocation (API.md v2) -----------------------------------------------------------------

    def _revocation(self, batches: tuple[Batch, ...], after: int, through: int) -> int | None:
        """Fold the removals among ``after < seq <= through``; the seq that revokes, if any."""
        access = self._access
        if access is None:
            return None
        for batch in batches:
            for seq, body in batch.removals:
                if after < seq <= through and access.observe_body(seq, body):
                    return seq
        return None

    def _revoke(self, seq: int) -> None:
        """Delivery ends at ``seq``; close with 4403 once everything up to it is in the sink."""
        self.revoked_at = seq
        if not self._backlog and (self._writer is None or self._writer.done()):
            self._close_revoked()

    def _close_revoked(self) -> None:
        if self.closing:
            return
        self.close()
        self._request_close(CLOSE_ACCESS_REVOKED, b"access_revoked")

    # -- live delivery ------------------------------------------------------------------------

    def _deliver(self, data: bytes, events: int, stamp: float) -> None:
        sink = self.sink
        if not self._backlog and sink.buffered < HIGH_WATER:
            try:
                sink.write(data)
            except ConnectionError:
                self.close()
                return
            if self._observe_lag is not None and stamp != NOT_AN_EVENT:
                self._observe_lag(time.monotonic() - stamp)
            return
        budget = self._budget
        if budget is None:
            budget = self._budget = BacklogBudget(self.max_backlog_bytes, self.max_backlog_events)
        if not budget.take(len(data), events):
            self.close()
            self._request_close(CLOSE_TRY_AGAIN_LATER, b"too slow: reconnect with since")
            return
        if self._backlog is None:
            self._backlog = deque()
        self._backlog.append((data, events, stamp))
        self._backlog_bytes += len(data)
        self._backlog_events += events
        if self._writer is None or self._writer.done():
            self._writer = self._spawn(self._write_backlog())

    async def _write_backlog(self) -> None:
        """Write the backlog in chunks of about ``HIGH_WATER`` bytes, waiting for the sink between them."""
        sink = self.sink
        backlog = self._backlog
        budget = self._budget
        if backlog is None or budget is None:  # closed (backlog dropped) before this task first ran
            self._writer = None
            return
        try:
            while backlog and not self.closing:
                await self._wait_below_high_water()
                if self.closing:
                    break
                chunk: list[bytes] = []
                stamps: list[float] = []
                size = 0
                while backlog and size < HIGH_WATER:
                    data, events, stamp = backlog.popleft()
                    self._backlog_bytes -= len(data)
                    self._backlog_events -= events
                    budget.release(len(data), events)
                    chunk.append(data)
                    stamps.append(stamp)
                    size += len(data)
                sink.write(chunk[0] if len(chunk) == 1 else b"".join(chunk))
                if self._observe_lag is not None:
                    now = time.monotonic()
                    for stamp in stamps:
                        if stamp != NOT_AN_EVENT:
                            self._observe_lag(now - stamp)
                await sink.writable()
        except ConnectionError:
            self.close()
            return
        finally:
            self._writer = None  # a finished task is not kept (its frame and result: ~0.4 KiB)
        if not backlog and self._backlog is backlog:
            self._backlog = None  # caught up: the empty deque is not kept
        if self.revoked_at is not None and not backlog:
            self._close_revoked()
        else:
            self._settle()

    # -- catch-up -----------------------------------------------------------------------------

    def _start_catch_up(self) -> None:
        if self._catching_up is None or self._catching_up.done():
            self._catching_up = self._spawn(self._catch_up())

    async def _catch_up(self) -> None:
        """Send every event after the position from the log, then switch to live (the seam).

        Pages are written whole and then the sink is waited for: a socket catching up is behind
        by definition, and catch-up never overflows. The next page is read while one drains.
        """
        seam = self.seam
        read = self._read_page
        stream_id = self.stream_id
        pages = self._pages
        prefetch: asyncio.Future[list[tuple[int, bytes]]] | None = None
        try:
            while not self.closing and self.revoked_at is None:
                kept = self._kept_page(seam.position)
                if kept is not None:
                    if prefetch is not None:  # kept by another socket since this read began
                        prefetch.cancel()
                        prefetch = None
                    seam.on_run(seam.position + 1, kept.last_seq)
                    await self._write_waiting(kept.frames)
                    continue
                # up to the next multiple of the page size: later pages are aligned, so kept ones fit
                limit = CATCH_UP_PAGE - seam.position % CATCH_UP_PAGE
                if prefetch is None:
                    page = await read(stream_id, seam.position, limit)
                else:
                    page, prefetch = await prefetch, None
                full = len(page) == limit
                fresh = seam.on_page(page)
                if full and self._kept_page(seam.position) is None:
                    prefetch = asyncio.ensure_future(read(stream_id, seam.position, CATCH_UP_PAGE))
                if fresh:
                    data = text_frames(fresh)
                    if pages is not None and full and fresh is page:
                        pages.put(stream_id, page[0][0], page[-1][0], data)
                    cut = self._revocation_in_page(fresh, data)
                    if cut is not None:
                        data = text_frames([pair for pair in fresh if pair[0] <= cut])
                    await self._write_waiting(data)
                    if cut is not None:
                        self._revoke(cut)
                        return
                if full or self.closing:
                    continue
                # no await from here until live: nothing can slip between log and live
                before = seam.position
                buffered = seam.buffered
                out = seam.go_live()
                if out is RESYNC:
                    continue
                if self._went_live is not None:
                    self._went_live(stream_id, seam.position)
                if out:
                    cut = self._revocation(buffered, before, seam.position)
                    if cut is not None:
                        out = _frames_after(buffered, before, cut)
                    self._deliver(out, (cut or seam.position) - before, time.monotonic())
                    if cut is not None:
                        self._revoke(cut)
                self._settle()
                return
        except ConnectionError:
            self.close()
        except LogGap:
            log.exception("catch-up of %r stopped: the log is not contiguous", stream_id)
            self.close()
            self._request_close(CLOSE_INTERNAL_ERROR, b"internal error")
        finally:
            if prefetch is not None:
                prefetch.cancel()
            self._catching_up = None  # a finished task is not kept (issue 16)

    def _kept_page(self, position: int) -> KeptPage | None:
        """The kept page that continues ``position`` and may be written as it is, or None.

        A page holding a removal is not used by a subscriber that folds removals (it is read
        from the log and searched body by body instead), so revocation cuts exactly where it would.
        """
        pages = self._pages
        if pages is None:
            return None
        kept = pages.get(self.stream_id, position)
        if kept is not None and kept.has_removal and self._access is not None:
            return None
        return kept

    def _revocation_in_page(self, page: Sequence[tuple[int, bytes]], frames: bytes) -> int | None:
        """Fold the removals of a catch-up page; the seq that revokes, if any.

        ``frames``: the page's frames joined. One search of them rules out a page without a
        removal (almost every page) at once; a search per body was ~15 % of the server's CPU
        in a catch-up (issue 16). A match across two frames only costs the search per body.
        """
        access = self._access
        if access is None or REMOVAL_MARKER not in frames:
            return None
        for seq, body in page:
            if REMOVAL_MARKER in body and access.observe_body(seq, body):
                return seq
        return None

    async def _write_waiting(self, data: bytes) -> None:
        """Write catch-up frames after any backlog, then wait until the sink is writable."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
        await self._wait_below_high_water()
        if self.closing:
            return
        self.sink.write(data)
        await self.sink.writable()

    async def _wait_below_high_water(self) -> None:
        """Wait while the sink holds more than ``HIGH_WATER`` unsent bytes.

        On a socket shared by many subscribers (``/v1/ws``) the others may have filled it since
        this one last waited: writing only below the mark keeps the socket's transport near
        ``HIGH_WATER`` plus one chunk or page, whatever the number of subscriptions. (A sink over
        its mark is paused, so each turn of the loop waits for the sink's resume signal.)
        """
        sink = self.sink
        while sink.buffered > HIGH_WATER and not sink.closing and not self.closing:
            await sink.writable()


def _frames_after(batches: tuple[Batch, ...], after: int, through: int) -> bytes:
    """The frames of seqs ``after < seq <= through`` from consecutive buffered batches, once each."""
    parts: list[bytes] = []
    position = after
    for batch in batches:
        if batch.last_seq <= position or batch.first_seq > through:
            continue
        parts.append(batch.between(position, through))
        position = min(batch.last_seq, through)
    return b"".join(parts)
