"""``RinglogSocket``: one ``GET /v1/ws`` connection for many drafts, their presence and the feed.

API.md v2 "One socket, many drafts", "Presence" and "The caller's own feed". One background task
owns the connection; every draft followed on it is a :class:`DraftSubscription` (an async
iterator of :class:`~ringlog.models.Event`, each seq once, in seq order) and the caller's feed is
a :class:`FeedStream` (an async iterator of :class:`~ringlog.models.FeedItem`, each position once,
in increasing order).

Resuming. When the connection drops (server restart, 1001, 1013 "too slow for the sum of its
drafts", a network error) the task reconnects with exponential backoff and full jitter (never
sooner than a ``Retry-After``), then subscribes every draft again with its *own* last seq, sends
``subscribe_me`` with the last feed position, and sends each draft's presence state again after
its ``subscribed``. A 4401 (token expired) reconnects at once with ``get_token()``'s token.

Exactly once, in order. Per draft, deliveries pass a :class:`~ringlog.ordering.SeqOrderer`; the
events of a subscription are taken only between its ``subscribed`` and the next disconnect
(events still in flight from an earlier subscription of the same draft are dropped: the new one
restarts from the seq the client holds). A gap (which the server's seam never makes) resubscribes
the draft from its last seq.

Bounded. Each stream's queue holds at most ``queue_size`` events and ``queue_bytes`` bytes of
frames. A consumer that falls behind never stalls the socket or the other drafts: past the bound
the stream stops taking its draft's events ("behind"), and once its consumer has read half of
what waits, it subscribes again from its last seq (the server restarts the subscription: API.md
"Subscribing again … restarts it from the new since"). The feed does the same with ``after``.

Ending. A per-subscription refusal (``forbidden``, ``not_found``, ``invalid_since``,
``too_many_subscriptions``) ends that stream only, raising :class:`~ringlog.stream.StreamError`
from its ``async for``; ``access_revoked`` ends it with :class:`~ringlog.stream.AccessRevoked`
after the removal event. ``unavailable`` / ``internal_error`` for one draft (docs/API.md) retry
that draft's subscribe with its own backoff; a draft-less
``unavailable`` (the server ended the feed after a failed read) sends ``subscribe_me`` again after
a backoff. A close that reconnecting cannot help (1008
``unauthorized`` / ``too_many_sockets``, 4401 without ``get_token``, HTTP 401/403/404 on the
upgrade) ends every stream with :class:`~ringlog.stream.StreamError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import aiohttp
import orjson
from pydantic import ValidationError

from projections.event_types import EVENT_TYPE_PREFIX
from ringlog.backoff import Backoff, parse_retry_after
from ringlog.models import Event, FeedItem
from ringlog.ordering import SeqOrderer
from ringlog.rest import TRANSIENT_ERRORS, auth_headers
from ringlog.stream import CLOSE_TOKEN_EXPIRED, MAX_SEQ, AccessRevoked, ConnectionLifecycle, StreamError
from ringlog.urls import base_url as checked_base_url
from ringlog.urls import websocket_url

log = logging.getLogger(__name__)

SocketStatus = Literal["connecting", "live", "offline", "closed"]
SubscriptionStatus = Literal["subscribing", "live", "behind", "ended"]
StatusCallback = Callable[[SocketStatus, str], None]
"""``on_status(status, detail)``: every change of :attr:`RinglogSocket.status`, and every failed
attempt to connect (``detail`` says why and when the next attempt is due)."""
ErrorCallback = Callable[[dict[str, Any]], None]
"""``on_error(message)``: an ``error`` message the socket does not turn into the end of a stream
(a refused ``presence``, a ``bad_message``), as the server sent it."""

#: per-subscription refusals that end the stream (API.md v2 "One socket, many drafts")
REFUSALS = frozenset({"forbidden", "not_found", "invalid_since", "too_many_subscriptions", "unauthorized"})
#: per-subscription refusals that say "not now" (docs/API.md): subscribe again after a backoff
RETRY_LATER = frozenset({"unavailable", "internal_error"})
CLOSE_POLICY = 1008
FATAL_HTTP = frozenset({401, 403, 404})
MAX_PRESENCE_BYTES = 512
"""API.md v2 "Presence": a state is a JSON object of at most 512 bytes."""
MEMBERS_WAIT = 30.0


class _Stream:
    """A bounded queue (items and bytes) that never blocks its producer, read by one consumer.

    ``offer`` returns False when the item does not fit (the caller then falls behind and catches
    up later); ``end`` makes the consumer stop after what is queued, with ``error`` raised if given.
    """

    def __init__(self, max_items: int, max_bytes: int) -> None:
        if max_items < 2 or max_bytes < 1:
            raise ValueError("queue_size must be >= 2 and queue_bytes >= 1")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.items: deque[tuple[Any, int]] = deque()
        self.bytes = 0
        self.ended = False
        self.error: BaseException | None = None
        self.wake = asyncio.Event()

    def offer(self, item: Any, size: int) -> bool:
        if self.items and (len(self.items) >= self.max_items or self.bytes + size > self.max_bytes):
            return False  # one item always fits, whatever its size: a stream is never stuck
        self.items.append((item, size))
        self.bytes += size
        self.wake.set()
        return True

    def end(self, error: BaseException | None = None) -> None:
        if not self.ended:
            self.ended = True
            self.error = error
            self.wake.set()

    @property
    def drained(self) -> bool:
        """At most half of the bound waits: a stream that fell behind may catch up now."""
        return len(self.items) <= self.max_items // 2 and self.bytes <= self.max_bytes // 2

    async def take(self) -> Any:
        while True:
            if self.items:
                item, size = self.items.popleft()
                self.bytes -= size
                return item
            if self.ended:
                if self.error is not None:
                    raise self.error  # every later call says so again
                raise StopAsyncIteration
            self.wake.clear()
            await self.wake.wait()


class _SocketStream:
    """What a draft's subscription and the feed share on the socket: the bounded queue, whether
    the current subscription's items are taken in, and the retry of a refused subscribe."""

    def __init__(self, socket: RinglogSocket) -> None:
        self.status: SubscriptionStatus = "subscribing"
        self._socket = socket
        self._stream = _Stream(socket.queue_size, socket.queue_bytes)
        self._accepting = False
        self._backoff = Backoff(base=0.5, cap=30.0)
        self._retry: asyncio.Task[None] | None = None

    def _disconnected(self) -> None:
        """The connection dropped: take nothing until subscribed again; "behind" stays behind."""
        self._accepting = False
        if self.status == "live":
            self.status = "subscribing"
        self._cancel_retry()

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def _end(self, error: BaseException | None) -> None:
        """The stream ends: its consumer gets what was received, then ``error`` (or the end)."""
        self.status = "ended"
        self._accepting = False
        self._cancel_retry()
        self._stream.end(error)


class DraftSubscription(_SocketStream):
    """One draft followed on a :class:`RinglogSocket`: ``async for event in subscription``.

    Yields :class:`~ringlog.models.Event` — every event of the draft with ``seq > since`` exactly
    once, in seq order, across reconnects — until :meth:`close` (then the iteration ends after
    what was already received) or an end raised from the ``async for``: :class:`AccessRevoked`,
    or :class:`StreamError` with the refusal's ``code``.

    ``members`` is who is present on the draft (API.md v2 "Presence"), by user id:
    ``{"user_id", "state", "since"}``, from the last ``presence_sync`` and the ``presence``
    messages after it; it is emptied while the socket is away and refilled by the next sync.
    """

    def __init__(self, socket: RinglogSocket, draft_id: str, since: int | None) -> None:
        super().__init__(socket)
        self.draft_id = draft_id
        self.head_seq: int | None = None
        """The draft's head when the server last answered ``subscribed``."""
        self.last_seq = since or 0
        """The last seq handed to the consumer."""
        self.members: dict[str, dict[str, Any]] = {}
        self.presence_state: dict[str, Any] | None = None
        """The state this client set with :meth:`RinglogSocket.set_presence` (sent again after
        every reconnect)."""
        self._since_known = since is not None
        self._orderer: SeqOrderer[Event] = SeqOrderer(since or 0)
        self._members_changed = asyncio.Event()

    @property
    def since(self) -> int | None:
        """What the next ``subscribe`` sends: the last seq taken in, or None (from the head)."""
        return self._orderer.last_seq if self._since_known else None

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        event: Event = await self._stream.take()
        self.last_seq = event.seq
        if self.status == "behind" and self._stream.drained:
            await self._socket._subscribe_again(self)
        return event

    async def close(self) -> None:
        """Unsubscribe (API.md v2: ``unsubscribe`` → ``unsubscribed``, no event of it after)."""
        await self._socket.unsubscribe(self.draft_id)

    async def wait_for_members(
        self, predicate: Callable[[dict[str, dict[str, Any]]], bool], timeout: float = MEMBERS_WAIT
    ) -> dict[str, dict[str, Any]]:
        """Wait (at most ``timeout`` s, else ``TimeoutError``) until ``predicate(members)``."""
        async with asyncio.timeout(timeout):
            while not predicate(self.members):
                self._members_changed.clear()
                await self._members_changed.wait()
        return self.members

    # -- driven by the socket's task -------------------------------------------------------

    def _subscribe_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "subscribe", "draft_id": self.draft_id}
        if self.since is not None:
            message["since"] = self.since
        return message

    def _subscribed(self, head_seq: Any) -> None:
        if isinstance(head_seq, int) and not isinstance(head_seq, bool):
            self.head_seq = head_seq
            if not self._since_known:
                self._orderer = SeqOrderer(head_seq)
                self._since_known = True
        self._orderer = SeqOrderer(self._orderer.last_seq)  # nothing of an old subscription waits
        self._accepting = True
        self._backoff.reset()
        self.status = "live"

    def _offer(self, event: Event, size: int) -> bool:
        """Take one event of the current subscription; False when the draft must be subscribed
        again from its last seq (a gap, or the consumer fell behind)."""
        if not self._accepting:
            return True
        for ready in self._orderer.offer(event):
            if not self._stream.offer(ready, size):
                # no room: forget this one and everything after it; catch up when drained
                self._orderer = SeqOrderer(ready.seq - 1)
                self._accepting = False
                self.status = "behind"
                log.info("draft %s: the consumer is behind at seq %d", self.draft_id, ready.seq - 1)
                return True
        if self._orderer.has_gap:
            log.warning(
                "draft %s: a gap after seq %d; subscribing again", self.draft_id, self._orderer.last_seq
            )
            self._accepting = False
            return False
        return True

    def _disconnected(self) -> None:
        self._set_members({})  # refilled by the next presence_sync
        super()._disconnected()

    def _end(self, error: BaseException | None) -> None:
        self._set_members({})
        super()._end(error)

    def _set_members(self, members: dict[str, dict[str, Any]]) -> None:
        self.members = members
        self._members_changed.set()

    def _take_presence(self, message: dict[str, Any]) -> None:
        """``presence_sync`` replaces the view; ``presence`` join/update sets a member, leave removes."""
        if message["type"] == "presence_sync":
            members = message.get("members")
            if isinstance(members, list):
                self._set_members(
                    {
                        m["user_id"]: m
                        for m in members
                        if isinstance(m, dict) and isinstance(m.get("user_id"), str)
                    }
                )
            return
        user_id = message.get("user_id")
        if not isinstance(user_id, str):
            return
        members = dict(self.members)
        if message.get("event") == "leave":
            members.pop(user_id, None)
        else:
            since = members.get(user_id, {}).get("since", message.get("ts"))
            members[user_id] = {"user_id": user_id, "state": message.get("state"), "since": since}
        self._set_members(members)


class FeedStream(_SocketStream):
    """The caller's own feed on a :class:`RinglogSocket` (API.md v2 "The caller's own feed").

    ``async for item in feed`` yields :class:`~ringlog.models.FeedItem` (``item.position``,
    ``item.event``): each position once, increasing, catch-up then live, resumed after reconnects
    with ``after`` = the last position taken in. ``last_position`` is the last one handed to the
    consumer.
    """

    def __init__(self, socket: RinglogSocket, after: int | None) -> None:
        super().__init__(socket)
        self.last_position = after or 0
        self._after = after

    def __aiter__(self) -> AsyncIterator[FeedItem]:
        return self

    async def __anext__(self) -> FeedItem:
        item: FeedItem = await self._stream.take()
        self.last_position = item.position
        if self.status == "behind" and self._stream.drained:
            await self._socket._send_feed(self)
        return item

    def _subscribe_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "subscribe_me"}
        if self._after is not None:
            message["after"] = self._after
        return message

    def _subscribed(self, last_position: Any) -> None:
        if self._after is None and isinstance(last_position, int) and not isinstance(last_position, bool):
            self._after = last_position  # a feed "from now" resumes from where now was
        self._accepting = True
        self._backoff.reset()
        self.status = "live"

    def _offer(self, item: FeedItem, size: int) -> None:
        if not self._accepting or (self._after is not None and item.position <= self._after):
            return  # not this subscription's, or a repeat
        if not self._stream.offer(item, size):
            self._accepting = False
            self.status = "behind"
            return
        self._after = item.position


class RinglogSocket(ConnectionLifecycle[SocketStatus]):
    """``async with RinglogSocket(url, user_id="alice") as sock: sub = await sock.subscribe(id)``.

    One ``GET /v1/ws`` connection (API.md v2), opened by ``async with`` and kept open — resumed
    after every drop — until :meth:`close`. ``status`` is ``"connecting"``, ``"live"`` (the server
    said ``connected``), ``"offline"`` (waiting to reconnect) or ``"closed"``. ``queue_size`` and
    ``queue_bytes`` bound each stream's queue (events, bytes of frames); see the module docstring
    for what happens past them. ``ValueError`` at once for a bad base URL or no credentials.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        user_id: str | None = None,
        *,
        get_token: Callable[[], Awaitable[str]] | None = None,
        backoff: Backoff | None = None,
        queue_size: int = 1000,
        queue_bytes: int = 4 * 1024 * 1024,
        heartbeat: float = 30.0,
        on_status: StatusCallback | None = None,
        on_error: ErrorCallback | None = None,
    ) -> None:
        auth_headers(token, user_id)  # fail early without credentials
        _Stream(queue_size, queue_bytes)  # fail early on bad bounds
        self.base_url = checked_base_url(base_url)
        self.token = token
        self.user_id = user_id
        self.get_token = get_token
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.heartbeat = heartbeat
        self.on_status = on_status
        self._status_log = "/v1/ws"
        self._logger = log
        self.on_error = on_error
        self.status: SocketStatus = "connecting"
        self.status_history: list[SocketStatus] = ["connecting"]
        self.connections = 0
        """How many times the server said ``connected`` (1 + the reconnects)."""
        self.subscriptions: dict[str, DraftSubscription] = {}
        self._feed: FeedStream | None = None
        self._backoff = backoff or Backoff()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._send_lock = asyncio.Lock()
        self._status_changed = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifetime ------------------------------------------------------------------------

    async def __aenter__(self) -> RinglogSocket:
        self._start("RinglogSocket")
        return self

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """The last guard: a task cancelled by someone else than :meth:`close` ends every stream
        with an error, rather than leave consumers waiting."""
        if not self._closed and task.cancelled():
            self._set_status("closed", "the socket's task was cancelled")
            self._end_all(StreamError("internal_error", "the socket's task was cancelled"))

    async def close(self) -> None:
        """Close the connection; every stream ends (its consumer gets what was received, then
        the end of iteration)."""
        if not await self._stop():
            return
        self._end_all(None)
        self._set_status("closed")

    # -- what a caller does ------------------------------------------------------------------

    async def subscribe(self, draft_id: str, since: int | None = None) -> DraftSubscription:
        """Follow ``draft_id``: events with ``seq > since`` (None: those after the head when the
        server first answers). ``ValueError`` for a draft already followed on this socket (close
        that subscription first) or a bad ``since``; refusals arrive through the iteration."""
        self._check_open()
        if not isinstance(draft_id, str) or not draft_id:
            raise ValueError("draft_id must be a non-empty string")
        if since is not None and (
            isinstance(since, bool) or not isinstance(since, int) or not 0 <= since <= MAX_SEQ
        ):
            raise ValueError(f"since must be an integer from 0 to {MAX_SEQ}, not {since!r}")
        if draft_id in self.subscriptions:
            raise ValueError(f"draft {draft_id!r} is already subscribed on this socket")
        sub = DraftSubscription(self, draft_id, since)
        self.subscriptions[draft_id] = sub
        await self._send(sub._subscribe_message())
        return sub

    async def unsubscribe(self, draft_id: str) -> None:
        """Stop following ``draft_id``; its stream ends after what it already received.
        Unsubscribing a draft not followed does nothing."""
        sub = self.subscriptions.pop(draft_id, None)
        if sub is None:
            return
        sub._end(None)
        await self._send({"type": "unsubscribe", "draft_id": draft_id})

    async def set_presence(self, draft_id: str, state: dict[str, Any]) -> None:
        """Set this user's presence state on a subscribed draft (API.md v2 "Presence": a JSON
        object of at most 512 bytes). Sent now if the subscription is live, and again after
        every reconnect. ``ValueError`` for another state or a draft not subscribed here."""
        sub = self.subscriptions.get(draft_id)
        if sub is None:
            raise ValueError(f"draft {draft_id!r} is not subscribed on this socket")
        if not isinstance(state, dict) or len(orjson.dumps(state)) > MAX_PRESENCE_BYTES:
            raise ValueError(f"a presence state is a JSON object of at most {MAX_PRESENCE_BYTES} bytes")
        sub.presence_state = state
        if sub.status == "live":
            await self._send({"type": "presence", "draft_id": draft_id, "state": state})

    async def feed(self, after: int | None = None) -> FeedStream:
        """The caller's own feed: entries with ``position > after`` (None: from now). One feed
        per socket (``ValueError`` for a second one or a bad ``after``)."""
        self._check_open()
        if after is not None and (
            isinstance(after, bool) or not isinstance(after, int) or not 0 <= after <= MAX_SEQ
        ):
            raise ValueError(f"after must be an integer from 0 to {MAX_SEQ}, not {after!r}")
        if self._feed is not None and self._feed.status != "ended":
            raise ValueError("this socket already follows the feed")
        self._feed = FeedStream(self, after)
        await self._send_feed(self._feed)
        return self._feed

    def _check_open(self) -> None:
        if self._closed or self._task is None:
            raise RuntimeError("use RinglogSocket with 'async with', and before close()")
        if self._task.done():
            raise StreamError("closed", "the socket ended; see the streams' errors")

    # -- sending ---------------------------------------------------------------------------------

    async def _send(self, message: dict[str, Any]) -> None:
        """Send one message if connected; while away, the reconnect sends what is needed."""
        ws = self._ws
        if ws is None or ws.closed:
            return
        async with self._send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):  # the reconnect sends it again
                await ws.send_str(orjson.dumps(message).decode())  # text: the server refuses binary

    async def _subscribe_again(self, sub: DraftSubscription) -> None:
        if self.subscriptions.get(sub.draft_id) is sub and sub.status != "ended":
            sub.status = "subscribing"
            sub._accepting = False  # what the old subscription still sends waits for the new one
            await self._send(sub._subscribe_message())

    async def _send_feed(self, feed: FeedStream) -> None:
        if self._feed is feed and feed.status != "ended":
            feed.status = "subscribing"
            feed._accepting = False  # what the old subscription still sends waits for the new one
            await self._send(feed._subscribe_message())

    async def _retry_feed_later(self, feed: FeedStream) -> None:
        await asyncio.sleep(feed._backoff.next_delay())
        feed._retry = None
        await self._send_feed(feed)

    async def _retry_later(self, sub: DraftSubscription, retry_after: float | None) -> None:
        await asyncio.sleep(sub._backoff.next_delay(retry_after))
        sub._retry = None
        await self._subscribe_again(sub)

    # -- the connection ------------------------------------------------------------------

    def _end_all(self, error: StreamError | None) -> None:
        for sub in list(self.subscriptions.values()):
            sub._end(error)
        self.subscriptions.clear()
        if self._feed is not None:
            self._feed._end(error)

    async def _run(self) -> None:
        """The one background task: connect, serve, reconnect; whatever ends it ends every stream."""
        try:
            while True:
                retry_after, failure = await self._connect_once()
                if retry_after == 0:
                    continue  # a fresh token: reconnect at once
                delay = self._backoff.next_delay(retry_after)
                self._set_status("offline", failure)
                self._tell("offline", f"{failure}; retrying in {delay:.1f} s")
                await asyncio.sleep(delay)
        except StreamError as e:
            self._set_status("closed", str(e))
            self._end_all(e)
        except Exception as e:  # a bug or a surprise: the consumers must hear of it, not wait
            log.exception("/v1/ws: the socket stopped")
            self._set_status("closed", str(e))
            self._end_all(StreamError("internal_error", f"{type(e).__name__}: {e}"))

    async def _connect_once(self) -> tuple[float | None, str]:
        """Serve one connection until it ends: (``Retry-After`` hint, 0 = at once; why it ended)."""
        assert self._session is not None
        last_error: dict[str, Any] = {}
        try:
            async with self._session.ws_connect(
                websocket_url(self.base_url) + "/v1/ws",
                headers=self._headers(),
                heartbeat=self.heartbeat,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
            ) as ws:
                try:
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            log.warning("/v1/ws: skipped a %s frame", msg.type.name)
                            continue
                        try:
                            message = orjson.loads(msg.data)
                        except orjson.JSONDecodeError:
                            log.warning("/v1/ws: skipped a frame that is not JSON")
                            continue
                        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
                            log.warning("/v1/ws: skipped a frame that is not a JSON object with a type")
                            continue
                        if message["type"] == "error" and "draft_id" not in message:
                            last_error = message
                        await self._on_message(ws, message, len(msg.data))
                finally:
                    self._ws = None
                    for sub in self.subscriptions.values():
                        sub._disconnected()
                    if self._feed is not None:
                        self._feed._disconnected()
                code = ws.close_code
        except aiohttp.WSServerHandshakeError as e:
            if e.status in FATAL_HTTP:
                codes = {401: "unauthorized", 403: "forbidden", 404: "not_found"}
                raise StreamError(codes[e.status], f"GET /v1/ws refused with HTTP {e.status}") from e
            retry = parse_retry_after(e.headers.get("Retry-After") if e.headers else None)
            return retry, f"GET /v1/ws refused with HTTP {e.status}"
        except TRANSIENT_ERRORS as e:
            return None, f"server not reachable at {self.base_url} ({type(e).__name__}: {e})"
        return await self._after_close(code, last_error)

    async def _after_close(self, code: int | None, last_error: dict[str, Any]) -> tuple[float | None, str]:
        error_code = str(last_error.get("code", ""))
        reason = str(last_error.get("message", "")) or f"socket closed with {code}"
        if code == CLOSE_POLICY and error_code != "rate_limited":  # a flood close: reconnect, slower
            raise StreamError(error_code or "policy", reason)
        if code == CLOSE_TOKEN_EXPIRED:
            if self.get_token is None:
                raise StreamError("token_expired", "the token expired and no get_token was given")
            self.token = await self.get_token()
            return 0, "token expired"
        return None, f"socket closed ({code})"  # 1001 shutting down, 1013 too slow, 1006 dropped

    async def _on_message(
        self, ws: aiohttp.ClientWebSocketResponse, message: dict[str, Any], size: int
    ) -> None:
        kind = message["type"]
        if kind.startswith(EVENT_TYPE_PREFIX):
            await self._on_event(message, size)
        elif kind == "connected":
            self.connections += 1
            self._backoff.reset()
            self._ws = ws  # from here on, callers send for themselves; these are sent now
            subscriptions = [s for s in self.subscriptions.values() if s.status != "behind"]
            self._set_status("live")
            for each in subscriptions:
                await self._subscribe_again(each)
            if self._feed is not None and self._feed.status != "behind":
                await self._send_feed(self._feed)
        elif kind == "subscribed":
            sub = self.subscriptions.get(str(message.get("draft_id")))
            if sub is not None and sub.status == "subscribing":
                sub._subscribed(message.get("head_seq"))
                if sub.presence_state is not None:
                    await self._send(
                        {"type": "presence", "draft_id": sub.draft_id, "state": sub.presence_state}
                    )
        elif kind in ("presence_sync", "presence"):
            sub = self.subscriptions.get(str(message.get("draft_id")))
            if sub is not None:
                sub._take_presence(message)
        elif kind == "subscribed_me":
            if self._feed is not None and self._feed.status == "subscribing":
                self._feed._subscribed(message.get("last_position"))
        elif kind == "me":
            await self._on_feed_item(message, size)
        elif kind == "error":
            self._on_error(message)
        # connected's peers: pong, unsubscribed, and types a newer server may add

    async def _on_event(self, message: dict[str, Any], size: int) -> None:
        sub = self.subscriptions.get(str(message.get("draft_id")))
        if sub is None:
            return  # unsubscribed, or still in flight from before an unsubscribe
        try:
            event = Event.model_validate(message, strict=True)
        except ValidationError as e:
            log.warning(
                "draft %s: skipped a bad event (%d field errors); resubscribing",
                sub.draft_id,
                e.error_count(),
            )
            await self._subscribe_again(sub)
            return
        if not 1 <= event.seq <= MAX_SEQ:
            log.warning("draft %s: skipped an event with seq %d", sub.draft_id, event.seq)
            return
        if not sub._offer(event, size):
            await self._subscribe_again(sub)

    async def _on_feed_item(self, message: dict[str, Any], size: int) -> None:
        feed = self._feed
        if feed is None:
            return
        try:
            item = FeedItem.model_validate(
                {"position": message.get("position"), "event": message.get("event")}
            )
        except ValidationError as e:
            log.warning("feed: skipped a bad entry (%d field errors)", e.error_count())
            return
        feed._offer(item, size)

    def _on_error(self, message: dict[str, Any]) -> None:
        code = str(message.get("code", ""))
        draft_id = message.get("draft_id")
        sub = self.subscriptions.get(draft_id) if isinstance(draft_id, str) else None
        text = str(message.get("message", "")) or code
        if sub is not None and code == "access_revoked":
            del self.subscriptions[sub.draft_id]
            sub._end(AccessRevoked(text))
            return
        if sub is not None and sub.status == "subscribing":
            if code in REFUSALS:
                del self.subscriptions[sub.draft_id]
                sub._end(StreamError(code, text))
                return
            if code in RETRY_LATER:
                retry_after = message.get("retry_after")
                hint = float(retry_after) if isinstance(retry_after, int | float) else None
                sub._cancel_retry()
                sub._retry = asyncio.create_task(
                    self._retry_later(sub, hint), name=f"resubscribe {sub.draft_id}"
                )
                sub._retry.add_done_callback(_log_failure)
                return
        feed = self._feed
        if draft_id is None and feed is not None and feed.status != "ended":
            # the feed's errors name no draft (docs/API.md): "unavailable" ends the server's feed
            # subscription for now (a failed catch-up read), any other refuses subscribe_me
            if code in RETRY_LATER:
                feed._cancel_retry()
                feed._retry = asyncio.create_task(self._retry_feed_later(feed), name="resubscribe feed")
                feed._retry.add_done_callback(_log_failure)
                return
            if feed.status == "subscribing" and code != "rate_limited":
                feed._end(StreamError(code, text))  # subscribe_me refused: the only draft-less request
                return
        log.warning("/v1/ws: error %s %s", code, text)
        if self.on_error is not None:
            try:
                self.on_error(message)
            except Exception:  # the caller's callback must not end the socket
                log.exception("on_error callback failed")


def _log_failure(task: asyncio.Task[None]) -> None:
    """A retry task's unexpected error is logged with its traceback, never lost."""
    if not task.cancelled() and task.exception() is not None:
        log.error("/v1/ws: %s failed", task.get_name(), exc_info=task.exception())
