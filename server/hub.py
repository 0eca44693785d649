"""Fan-out of committed events to the subscribers of each stream (one draft = one stream).

The hub is the one listener per stream on the store's notifier. On every commit it frames the
stream's new events once (:func:`server.frames.batches_of`) and hands the same bytes to each of
the stream's :class:`~server.subscriber.Subscriber` objects through the stream's
:class:`Fanout`: the subscribers that keep up are written to straight from its *lane*, the others
are offered the batch and write it to their sockets or backlogs (one slow socket never delays
another). A subscriber is registered here *before* its catch-up reads the log, so nothing
committed meanwhile is missed (:mod:`server.seam`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from eventstore.events import Record
from eventstore.notifier import Notifier
from eventstore.store import Store, StreamBodyReader
from projections.access import ViewAccess
from server.frames import Batch, batches_of
from server.pages import FramedPages
from server.subscriber import (
    CATCH_UP_PAGE,
    BacklogBudget,
    DirectWriter,
    ReadPage,
    RequestClose,
    Sink,
    Spawn,
    Subscriber,
)

log = logging.getLogger(__name__)

LAG_CHUNK = 256
"""Lane writes per fan-out lag observation: each observation counts a chunk's writes at the lag
measured after its last one (at most a chunk's writes, ~2 ms, later than the first's)."""


class ObserveLag(Protocol):
    """Receives commit→write lags in seconds, ``count`` deliveries at a time (a histogram's observe)."""

    def __call__(self, seconds: float, count: int = 1, /) -> None: ...


class Fanout:
    """One stream's subscribers, and how a committed batch reaches each of them.

    The *lane* holds the subscribers that are live, level with one another at :attr:`position`,
    with nothing queued and a sink that takes direct writes (a per-draft socket over a
    :class:`~server.subscriber.DeliverySocket`). A batch that continues the position is written
    to every member's transport by one loop, ``if not t.is_closing(): t.write(data)`` — what a raw
    broadcast does (issue 16: the per-socket Python of ``offer``, the seam, the backpressure and
    close checks was a tenth of the event loop's time). What a subscriber checks per event holds
    for every member by construction, and the events that break it take a member out
    synchronously, before anything else is written:

    * order, no gap, no repeat: a member joins only at the lane's position
      (:meth:`join`); a batch that does not continue the position (a lost notification) or holds
      a removal (each member's own revocation fold) dissolves the lane first, and every member
      goes back to its seam at the lane's position;
    * bounded memory: a transport that pauses writing (more than the high-water mark unsent)
      calls its sink's ``on_stop`` from within the write, so the member leaves, and its next
      batch goes to its own backlog (bounded, 1013);
    * nothing after a decision to close: the sink's ``start_closing`` (every close decision,
      and aiohttp's own Close frames through ``DeliverySocket.close``) takes the member out;
      a transport already closing is skipped by the loop.

    Every other subscriber (catching up, behind, closing, or on a shared ``/v1/ws`` socket) is
    offered each batch (:meth:`Subscriber.offer`) and rejoins when it is live and idle again.
    """

    __slots__ = ("lane", "observe_lag", "others", "position")

    def __init__(self, observe_lag: ObserveLag | None) -> None:
        self.lane: dict[Subscriber, DirectWriter] = {}
        self.others: set[Subscriber] = set()
        self.position = 0
        """The seq of the last event written to every member (meaningful while there are members)."""
        self.observe_lag = observe_lag

    def __len__(self) -> int:
        return len(self.lane) + len(self.others)

    def add(self, sub: Subscriber) -> None:
        """A new subscriber: offered every batch until it joins the lane."""
        self.others.add(sub)

    def discard(self, sub: Subscriber) -> None:
        """``sub`` gets nothing more from this stream."""
        self.leave(sub)
        self.others.discard(sub)

    def join(self, sub: Subscriber) -> None:
        """Take ``sub`` into the lane if it stands at the lane's position (any, when empty) and
        its sink takes direct writes (:meth:`Subscriber.enter_lane`); else it stays offered."""
        if sub not in self.others:
            return
        lane = self.lane
        position = sub.position
        if lane and position != self.position:
            return  # ahead of the lane (it read the log past a batch not yet published): later
        writer = sub.enter_lane(self)
        if writer is None:
            return
        if not lane:
            self.position = position
        self.others.discard(sub)
        lane[sub] = writer

    def leave(self, sub: Subscriber) -> None:
        """Hand ``sub``'s delivery back to it at the lane's position (a member whose sink stopped
        taking direct writes, or that closes)."""
        if self.lane.pop(sub, None) is None:
            return
        sub.left_lane(self.position)
        self.others.add(sub)

    def publish(self, batch: Batch) -> None:
        """Deliver ``batch`` (committed, in seq order) to every subscriber of the stream.

        The others are taken before the lane is written (a member paused by its write leaves
        into them at the batch's last seq), except when the lane dissolves: then every member
        goes back to its own seam and is offered the batch like the others.
        """
        others = tuple(self.others)
        if self.lane:
            position = self.position
            if batch.removals or batch.first_seq > position + 1:
                self._dissolve()
                others = tuple(self.others)
            elif batch.last_seq > position:
                self.position = batch.last_seq
                data = batch.data if batch.first_seq == position + 1 else batch.after(position)
                self._write(data, batch.stamp)
        for sub in others:
            sub.offer(batch)

    def offer_message(self, frame: bytes) -> int:
        """Write a frame that is not an event to the members, offer it to the others; how many.

        The others are taken before the lane is written: a member whose write pauses its
        transport leaves the lane into the others from inside ``write()``, and must not be
        offered the frame it has just been written (a presence frame has no seq to drop a copy).
        """
        others = tuple(self.others)
        for writer in tuple(self.lane.values()):
            if not writer.is_closing():
                writer.write(frame)
        for sub in others:
            sub.offer_message(frame)
        return len(self)

    def _write(self, data: bytes, stamp: float) -> None:
        writers = tuple(self.lane.values())
        observe = self.observe_lag
        for start in range(0, len(writers), LAG_CHUNK):
            chunk = writers[start : start + LAG_CHUNK]
            skipped = 0
            for writer in chunk:
                if writer.is_closing():
                    skipped += 1
                else:
                    writer.write(data)
            if observe is not None and len(chunk) > skipped:
                observe(time.monotonic() - stamp, len(chunk) - skipped)

    def _dissolve(self) -> None:
        """Every member back to its own seam (the lane re-forms as they settle again)."""
        for sub in tuple(self.lane):
            self.leave(sub)


class Hub:
    """Per-stream sets of subscribers, fed by the store's notifier.

    ``max_backlog_bytes`` / ``max_backlog_events`` bound each subscriber (``--ws-queue-bytes``,
    ``--ws-queue-size``); ``observe_lag(seconds, count)`` receives the deliveries' commit→write
    lags (the lane's ``count`` at a time, see :data:`LAG_CHUNK`); ``page_cache_bytes`` bounds the
    framed catch-up pages kept for sockets that replay the same history
    (:class:`~server.pages.FramedPages`; 0: none kept).
    """

    def __init__(
        self,
        store: Store,
        *,
        max_backlog_bytes: int,
        max_backlog_events: int,
        observe_lag: ObserveLag | None = None,
        page_cache_bytes: int = 0,
    ) -> None:
        self.store = store
        self.pages = FramedPages(page_cache_bytes, CATCH_UP_PAGE) if page_cache_bytes > 0 else None
        """Full catch-up pages framed once and shared by every subscriber here (``--catch-up-cache-bytes``;
        None when 0)."""
        self.notifier: Notifier = store.notifier
        self.max_backlog_bytes = max_backlog_bytes
        self.max_backlog_events = max_backlog_events
        self.observe_lag = observe_lag
        self._streams: dict[str, Fanout] = {}
        self._listeners: dict[str, Callable[[Sequence[Record]], None]] = {}
        self._live_heads: dict[str, int] = {}
        """Per stream with a listener: a seq at or above every event of it this hub has been offered
        or read up to (see :meth:`subscribe`)."""
        self._went_live = self._note_live_head  # one bound method for every subscriber
        self.read_page: ReadPage = (
            store.read_stream_bodies if isinstance(store, StreamBodyReader) else self._bodies_from_records
        )

    async def _bodies_from_records(
        self, stream_id: str, after_seq: int, limit: int
    ) -> list[tuple[int, bytes]]:
        return [(r.seq, r.body) for r in await self.store.read(stream_id, after_seq, limit)]

    @property
    def subscriber_count(self) -> int:
        """Subscribers across all streams."""
        return sum(len(s) for s in self._streams.values())

    def subscribe(
        self,
        stream_id: str,
        sink: Sink,
        since: int,
        *,
        spawn: Spawn,
        request_close: RequestClose,
        access: ViewAccess | None = None,
        budget: BacklogBudget | None = None,
    ) -> Subscriber:
        """Deliver ``stream_id``'s events after ``since`` to ``sink``: catch-up, then live.

        The subscriber receives live batches from this call on, and its catch-up task (run
        with ``spawn``) starts after that: the order the seam relies on. With ``access`` (the
        socket user's view access at admission) delivery ends at the event that revokes it and
        ``request_close(4403, …)`` follows (API.md v2 "Revocation is live"). ``budget`` is the
        socket's shared backlog bound (``/v1/ws``); by default the subscriber gets its own.

        A subscriber whose ``since`` is at or past the stream's *live head* goes live at once,
        without reading the log (issue 16: a connect storm read the log once per socket to find
        nothing). The live head is the highest of the seqs offered to this listener and the
        positions subscribers reached when they went live; the listener has existed throughout.
        Every event above it is therefore still to be published (an event published before the
        listener was committed before the first subscriber's catch-up read the log, so that
        subscriber's live position covers it; the notifier publishes a stream's events in seq
        order), and will reach the new subscriber through the listener: no gap, no repeat.

        A subscriber without ``budget`` (a socket of its own) joins the stream's lane
        (:class:`Fanout`) whenever it is live with nothing queued.
        """
        fanout = self._streams.get(stream_id)
        if fanout is None:
            fanout = self._streams[stream_id] = Fanout(self.observe_lag)
            listener = self._make_listener(stream_id, fanout)
            self._listeners[stream_id] = listener
            self.notifier.add_listener(stream_id, listener)
        sub = Subscriber(
            stream_id,
            sink,
            since,
            read_page=self.read_page,
            spawn=spawn,
            request_close=request_close,
            max_backlog_bytes=self.max_backlog_bytes,
            max_backlog_events=self.max_backlog_events,
            observe_lag=self.observe_lag,
            access=access,
            budget=budget,
            went_live=self._went_live,
            pages=self.pages,
            settled=fanout.join if budget is None else None,  # a socket of its own: the lane
        )
        fanout.add(sub)
        live_head = self._live_heads.get(stream_id)
        sub.start(live=live_head is not None and since >= live_head)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Close ``sub`` (it writes nothing more) and stop offering it batches; idempotent."""
        sub.close()
        fanout = self._streams.get(sub.stream_id)
        if fanout is None:
            return
        fanout.discard(sub)
        if not fanout:
            del self._streams[sub.stream_id]
            self._live_heads.pop(sub.stream_id, None)
            listener = self._listeners.pop(sub.stream_id)
            self.notifier.remove_listener(sub.stream_id, listener)

    def offer_message(self, stream_id: str, frame: bytes) -> int:
        """Offer one pre-framed message that is not an event (presence, API.md v2) to every
        subscriber of ``stream_id``; the number of subscribers offered to.

        The same bytes go to each subscriber's transport (the lane) or bounded sink or backlog
        (:meth:`Subscriber.offer_message`): no task, no ``await``, no copy per socket.
        """
        fanout = self._streams.get(stream_id)
        if not fanout:
            return 0
        return fanout.offer_message(frame)

    def _note_live_head(self, stream_id: str, seq: int) -> None:
        """A subscriber of ``stream_id`` went live at ``seq`` (its catch-up read the log up to it)."""
        if stream_id in self._streams and seq > self._live_heads.get(stream_id, -1):
            self._live_heads[stream_id] = seq

    def _make_listener(self, stream_id: str, fanout: Fanout) -> Callable[[Sequence[Record]], None]:
        live_heads = self._live_heads

        def on_commit(records: Sequence[Record]) -> None:
            for batch in batches_of(records, time.monotonic()):  # framed once for every socket
                if batch.last_seq > live_heads.get(stream_id, -1):
                    live_heads[stream_id] = batch.last_seq
                fanout.publish(batch)

        return on_commit
