"""``subscribe_me`` on ``GET /v1/ws``: the caller's own feed over the multiplexed socket (API.md v2).

``{"type": "subscribe_me", "after"?}`` → ``{"type": "subscribed_me", "last_position"}``, then
``{"type": "me", "position", "event"}`` for every entry of the caller's feed after ``after``
(default: after ``last_position``), catch-up from the feed index then live, no gap and no
repeat (:class:`server.feed_subscription.FeedSubscription`). Plugs into the socket through
:mod:`server.mux_hooks` (:func:`install`), without touching the socket's session:

* ``after`` is a JSON integer from 0 to :data:`server.params.MAX_SEQ` (``null`` or absent: from
  now); anything else is ``bad_message`` (the socket stays open). An ``after`` beyond what this
  process has indexed is accepted (another node may be ahead): entries up to it are skipped.
* ``subscribe_me`` again restarts the feed from the new ``after`` (no entry of the old one
  follows the new ``subscribed_me``); the feed ends when the socket closes.
* Frames go into the socket's sink after everything written before them. A socket whose unsent
  bytes exceed ``--ws-queue-bytes`` while its feed delivers is closed with 1013 (the client
  reconnects and subscribes again with ``after`` = the last ``position`` it processed).
* A failed catch-up read answers ``{"type": "error", "code": "unavailable"}`` and ends the feed
  subscription; the socket and its draft subscriptions go on.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from server.feed_subscription import FeedSubscription
from server.frames import text_frame
from server.mux_messages import BadMessage
from server.params import MAX_SEQ
from server.subscriber import CLOSE_TRY_AGAIN_LATER, SinkClosed

if TYPE_CHECKING:
    from projections.feed_index import FeedItem
    from server.mux_hooks import MuxExtensions
    from server.ws_mux import MuxSession

log = logging.getLogger(__name__)

EXTRA_KEY = "feed"
"""Where a socket keeps its :class:`FeedSubscription` (``MuxSession.extras``)."""


def install(mux: MuxExtensions) -> None:
    """Register ``subscribe_me`` and the release of its subscription on ``/v1/ws``."""
    mux.handlers["subscribe_me"] = subscribe_me
    mux.on_close.append(release)


def parse_after(message: dict[str, Any]) -> int | None:
    """``after`` of a ``subscribe_me``: None (absent or null) or an integer in 0..MAX_SEQ.

    Raises :class:`~server.mux_messages.BadMessage` (``bad_message``) otherwise: a string, a
    float, a boolean, a negative or too large number.
    """
    after = message.get("after")
    if after is None:
        return None
    if isinstance(after, bool) or not isinstance(after, int) or not 0 <= after <= MAX_SEQ:
        raise BadMessage("bad_message", f"after must be an integer from 0 to {MAX_SEQ}, or left out")
    return after


def me_frame(item: FeedItem) -> bytes:
    """The ``{"type": "me", "position", "event"}`` text frame of a feed entry (the event's own bytes)."""
    return text_frame(
        b'{"type":"me","position":' + str(item.position).encode() + b',"event":' + item.body + b"}"
    )


async def subscribe_me(session: MuxSession, message: dict[str, Any]) -> None:
    """Answer ``subscribe_me``: ``subscribed_me``, then the feed's entries (catch-up in a task of the socket)."""
    after = parse_after(message)
    release(session)  # a second subscribe_me restarts the feed
    limit = session.st.settings.ws_queue_bytes

    def deliver(item: FeedItem) -> None:
        try:
            session.sink.write(me_frame(item))
        except SinkClosed:
            sub.close()
            return
        if session.sink.buffered > limit:
            sub.close()
            session.st.metrics.slow_closes.inc()
            session.closer.request(CLOSE_TRY_AGAIN_LATER, b"too slow for the feed")

    sub = FeedSubscription(session.st.feed, session.user_id, deliver)
    session.extras[EXTRA_KEY] = sub
    last_position = await sub.start(after)
    if session.extras.get(EXTRA_KEY) is not sub:
        sub.close()  # the socket closed (or a newer subscribe_me ran) meanwhile
        return
    session.send({"type": "subscribed_me", "last_position": last_position})
    session.tasks.spawn(_catch_up(session, sub))


async def _catch_up(session: MuxSession, sub: FeedSubscription) -> None:
    try:
        await sub.catch_up()
    except SinkClosed:
        sub.close()
    except Exception:
        log.warning("feed catch-up of %r failed", session.user_id, exc_info=True)
        sub.close()
        if session.extras.get(EXTRA_KEY) is sub:
            del session.extras[EXTRA_KEY]
            with contextlib.suppress(SinkClosed):
                session.send_error("unavailable", "the feed could not be read; send subscribe_me again")


def release(session: MuxSession) -> None:
    """End the socket's feed subscription, if any (no entry is delivered after this)."""
    sub = session.extras.pop(EXTRA_KEY, None)
    if isinstance(sub, FeedSubscription):
        sub.close()
