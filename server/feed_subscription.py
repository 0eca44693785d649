"""One socket's subscription to its user's own feed: catch-up from the index, then live (``subscribe_me``).

For the multiplexed socket (API.md v2 "The caller's own feed": ``{"type": "subscribe_me",
"after"?}`` → ``{"type": "subscribed_me", "last_position"}``, then ``{"type": "me", "position",
"event"}`` messages, catch-up then live, no gap and no repeat). The socket owns the wire format;
this module owns the order. Interface::

    sub = FeedSubscription(feed, user_id, deliver)      # deliver(item) for every entry, in order
    last_position = await sub.start(after)             # registered for live entries; send subscribed_me
    await sub.catch_up()                               # entries after `after`, then live ones
    ...
    sub.close()                                        # no deliver() after this returns

``deliver`` is called synchronously, from ``catch_up`` and later from the feed projector's
advance; it must not block (a socket puts the message in its bounded outbound buffer and closes
itself with 1013 when that is full, as for draft subscriptions) and should not raise.

The seam (:class:`FeedSeam`) follows :class:`server.seam.CatchUpSeam`: the listener is
registered *before* the index is read, live advances are buffered (bounded in bytes) while the
catch-up reads, and the merge drops what was already delivered. Feed positions are not
contiguous per user (they are global positions), so the seam tracks the index position it has
*covered* rather than the last entry: an advance tells ``(upto, items)``, and the index is
complete up to ``upto``. A buffer overflow makes :meth:`FeedSubscription.catch_up` read the index
again from the covered position instead of guessing.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final, Literal

from projections.feed_index import READ_YOUR_WRITES_SECONDS, FeedItem, FeedProjector

CATCH_UP_PAGE = 500
"""Entries read from the index per catch-up read."""

MAX_BUFFERED_BYTES = 1 << 20
"""Bytes of live entries a subscription keeps while catching up, at most (beyond: read again)."""

MAX_RESYNCS = 100
"""Catch-up rounds at most before :meth:`FeedSubscription.catch_up` gives up (FeedResyncLimit)."""


class _Resync(enum.Enum):
    NEEDED = "resync"


RESYNC: Final = _Resync.NEEDED
"""Returned by :meth:`FeedSeam.go_live` when the buffer overflowed: read the index again."""


class FeedResyncLimit(Exception):
    """The index kept advancing faster than the subscription could catch up (MAX_RESYNCS rounds)."""


class FeedSeam:
    """Where one feed subscription stands: catching up (buffering live advances) or live. Pure.

    ``position``: the global position up to which every entry of the user's has been handed
    out (``after`` at first). The items handed out by :meth:`on_page`, :meth:`go_live` and
    :meth:`on_live`, in call order, are the user's entries above ``after`` once each, in
    position order (tests/server/test_feed_subscription.py checks it for arbitrary interleavings).
    """

    __slots__ = ("_buffer", "_buffered_bytes", "_overflowed", "live", "max_buffered_bytes", "position")

    def __init__(self, after: int, max_buffered_bytes: int = MAX_BUFFERED_BYTES) -> None:
        if after < 0:
            raise ValueError("after must be >= 0")
        self.position = after
        self.live = False
        self.max_buffered_bytes = max_buffered_bytes
        self._buffer: deque[tuple[int, Sequence[FeedItem]]] = deque()
        self._buffered_bytes = 0
        self._overflowed = False

    def on_page(self, page: Sequence[FeedItem], covered: int | None = None) -> list[FeedItem]:
        """A catch-up page read from the index after :attr:`position`: the items to hand out.

        ``covered``: the index position the read was complete up to (pass it with the last
        page of a read; the position then moves to it).
        """
        fresh = [item for item in page if item.position > self.position]
        if fresh:
            self.position = fresh[-1].position
        if covered is not None:
            self.position = max(self.position, covered)
        return fresh

    def on_live(self, upto: int, items: Sequence[FeedItem]) -> list[FeedItem]:
        """The index advanced to ``upto`` with these new entries: the items to hand out now."""
        if not self.live:
            self._buffer.append((upto, items))
            self._buffered_bytes += sum(len(i.body) for i in items)
            while self._buffered_bytes > self.max_buffered_bytes and self._buffer:
                _, dropped = self._buffer.popleft()
                self._buffered_bytes -= sum(len(i.body) for i in dropped)
                self._overflowed = True
            return []
        fresh = [item for item in items if item.position > self.position]
        self.position = max(self.position, upto, fresh[-1].position if fresh else 0)
        return fresh

    def go_live(self) -> list[FeedItem] | Literal[_Resync.NEEDED]:
        """The catch-up has read the index up to :attr:`position`: merge the buffer, go live.

        Returns the buffered items above the position (and is then live), or :data:`RESYNC`
        (the buffer is cleared, still catching up) when advances were dropped for space.
        """
        if self._overflowed:
            self._clear()
            return RESYNC
        out: list[FeedItem] = []
        for upto, items in self._buffer:
            out += [item for item in items if item.position > self.position]
            if out:
                self.position = max(self.position, out[-1].position)
            self.position = max(self.position, upto)
        self._clear()
        self.live = True
        return out

    def _clear(self) -> None:
        self._buffer.clear()
        self._buffered_bytes = 0
        self._overflowed = False


class FeedSubscription:
    """A user's feed for one subscriber: :meth:`start`, :meth:`catch_up`, then live until :meth:`close`.

    ``deliver(item)`` receives every :class:`~projections.feed_index.FeedItem` (``position``,
    ``body`` = the event's JSON bytes) after ``after``, once, in position order.
    """

    def __init__(
        self,
        feed: FeedProjector,
        user_id: str,
        deliver: Callable[[FeedItem], None],
        *,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
        page: int = CATCH_UP_PAGE,
    ) -> None:
        self.feed = feed
        self.user_id = user_id
        self._deliver = deliver
        self._max_buffered_bytes = max_buffered_bytes
        self._page = page
        self._seam: FeedSeam | None = None
        self._head = 0
        self._closed = False

    async def start(self, after: int | None = None) -> int:
        """Register for live entries and return ``last_position`` (the index position now).

        ``after`` None: start after ``last_position`` (nothing is replayed). An ``after`` above
        ``last_position`` is the caller's to refuse (it is a position the index has not reached).
        """
        if self._seam is not None:
            raise RuntimeError("a feed subscription starts once")
        await self.feed.caught_up(READ_YOUR_WRITES_SECONDS)
        self._head = self.feed.position
        self._seam = FeedSeam(self._head if after is None else after, self._max_buffered_bytes)
        self.feed.add_listener(self.user_id, self._on_live)
        return self._head

    async def catch_up(self) -> None:
        """Deliver the entries after ``after`` from the index, then switch to live.

        Raises :class:`FeedResyncLimit` after :data:`MAX_RESYNCS` overflowing rounds, and the
        store's error if the index cannot be read (the subscription is then closed).
        """
        seam = self._seam
        if seam is None:
            raise RuntimeError("start the subscription first")
        target = self._head
        try:
            for _ in range(MAX_RESYNCS):
                while not self._closed:
                    rows = await self.feed.store.feed_read(self.user_id, seam.position, target, self._page)
                    full = len(rows) >= self._page
                    items = [FeedItem(p, body) for p, body in rows]
                    self._hand_out(seam.on_page(items, None if full else target))
                    if not full:
                        break
                if self._closed:
                    return
                merged = seam.go_live()
                if merged is not RESYNC:
                    self._hand_out(merged)
                    return
                target = self.feed.position
            raise FeedResyncLimit(f"the feed of {self.user_id!r} kept overflowing its catch-up buffer")
        except BaseException:
            self.close()
            raise

    def _on_live(self, upto: int, items: Sequence[FeedItem]) -> None:
        if self._seam is not None and not self._closed:
            self._hand_out(self._seam.on_live(upto, items))

    def _hand_out(self, items: Sequence[FeedItem]) -> None:
        for item in items:
            if self._closed:
                return
            self._deliver(item)

    @property
    def position(self) -> int:
        """The global position up to which entries have been handed out (covered); meaningless once closed."""
        return self._seam.position if self._seam is not None else 0

    def close(self) -> None:
        """Stop delivering (idempotent); nothing is delivered after this returns."""
        self._closed = True
        self.feed.remove_listener(self.user_id, self._on_live)
