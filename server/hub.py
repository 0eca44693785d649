"""Fan-out of committed events to the subscribers of each stream (one draft = one stream).

The hub is the one listener per stream on the store's notifier. On every commit it frames the
stream's new events once (:func:`server.frames.batches_of`) and offers the same bytes to each of
the stream's :class:`~server.subscriber.Subscriber` objects, which write them to their sockets or
backlogs (one slow socket never delays another). A subscriber is registered here *before* its
catch-up reads the log, so nothing committed meanwhile is missed (:mod:`server.seam`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from eventstore.events import Record
from eventstore.notifier import Notifier
from eventstore.store import Store, StreamBodyReader
from projections.access import ViewAccess
from server.frames import batches_of
from server.pages import FramedPages
from server.subscriber import CATCH_UP_PAGE, BacklogBudget, ReadPage, RequestClose, Sink, Spawn, Subscriber

log = logging.getLogger(__name__)


class Hub:
    """Per-stream sets of subscribers, fed by the store's notifier.

    ``max_backlog_bytes`` / ``max_backlog_events`` bound each subscriber (``--ws-queue-bytes``,
    ``--ws-queue-size``); ``observe_lag(seconds)`` receives each delivery's commit→write lag;
    ``page_cache_bytes`` bounds the framed catch-up pages kept for sockets that replay the same
    history (:class:`~server.pages.FramedPages`; 0: none kept).
    """

    def __init__(
        self,
        store: Store,
        *,
        max_backlog_bytes: int,
        max_backlog_events: int,
        observe_lag: Callable[[float], None] | None = None,
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
        self._streams: dict[str, set[Subscriber]] = {}
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
        """
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
        )
        subs = self._streams.get(stream_id)
        if subs is None:
            subs = self._streams[stream_id] = set()
            listener = self._make_listener(stream_id, subs)
            self._listeners[stream_id] = listener
            self.notifier.add_listener(stream_id, listener)
        subs.add(sub)
        live_head = self._live_heads.get(stream_id)
        sub.start(live=live_head is not None and since >= live_head)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Close ``sub`` (it writes nothing more) and stop offering it batches; idempotent."""
        sub.close()
        subs = self._streams.get(sub.stream_id)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._streams[sub.stream_id]
            self._live_heads.pop(sub.stream_id, None)
            listener = self._listeners.pop(sub.stream_id)
            self.notifier.remove_listener(sub.stream_id, listener)

    def offer_message(self, stream_id: str, frame: bytes) -> int:
        """Offer one pre-framed message that is not an event (presence, API.md v2) to every
        subscriber of ``stream_id``; the number of subscribers offered to.

        The same bytes go to each subscriber's bounded sink or backlog
        (:meth:`Subscriber.offer_message`): no task, no ``await``, no copy per socket.
        """
        subs = self._streams.get(stream_id)
        if not subs:
            return 0
        for sub in tuple(subs):
            sub.offer_message(frame)
        return len(subs)

    def _note_live_head(self, stream_id: str, seq: int) -> None:
        """A subscriber of ``stream_id`` went live at ``seq`` (its catch-up read the log up to it)."""
        if stream_id in self._streams and seq > self._live_heads.get(stream_id, -1):
            self._live_heads[stream_id] = seq

    def _make_listener(self, stream_id: str, subs: set[Subscriber]) -> Callable[[Sequence[Record]], None]:
        live_heads = self._live_heads

        def on_commit(records: Sequence[Record]) -> None:
            for batch in batches_of(records, time.monotonic()):  # framed once for every socket
                if batch.last_seq > live_heads.get(stream_id, -1):
                    live_heads[stream_id] = batch.last_seq
                for sub in tuple(subs):
                    sub.offer(batch)

        return on_commit
