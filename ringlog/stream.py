"""``DraftStream``: every event of a draft exactly once, in seq order, whatever the network does.

One background task owns the connection. It streams the WebSocket from ``since = last_seq``;
when the socket cannot open or drops, it long-polls ``/events?since=…&wait=…`` until the next
socket attempt is due (exponential backoff with full jitter, never sooner than ``Retry-After``).
Every delivery, from either channel, goes through one :class:`SeqOrderer`, so overlaps are
dropped and holes are filled from ``/events`` before anything after them is released.

Presence (API.md v2) rides the same socket: ``presence_sync`` and ``presence`` messages update
:attr:`DraftStream.presence` and go to ``on_presence``; :meth:`DraftStream.set_presence` sends the
user's state now and again after each reconnect.

Nothing ends silently. A frame that is not what API.md "WebSocket" promises (not JSON, not an
object, an event without an integer ``seq`` or of another draft, a binary frame) is skipped with
a logged warning and the stream resynchronises from ``/events?since=last_seq``; a reply of
``/events`` that is not the contract's JSON, and any unexpected error of the background task,
is raised from the consumer's ``async for`` as :class:`StreamError` — never a consumer left
waiting for events that will not come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

import aiohttp
import orjson
from pydantic import ValidationError

from projections.event_types import EVENT_TYPE_PREFIX
from ringlog.backoff import Backoff, parse_retry_after
from ringlog.models import Event
from ringlog.ordering import SeqOrderer
from ringlog.rest import TRANSIENT_ERRORS, auth_headers, format_wait
from ringlog.urls import base_url as checked_base_url
from ringlog.urls import websocket_url

log = logging.getLogger(__name__)

Status = Literal["live", "polling", "offline"]
PresenceCallback = Callable[[dict[str, Any]], None]
"""``on_presence(message)``: each ``presence_sync`` and ``presence`` message (API.md v2
"Presence"), as the server sent it; :attr:`DraftStream.presence` is already updated."""
StatusCallback = Callable[[Status, str], None]
"""``on_status(status, detail)``: called on every status change and on every failed attempt to
reach the server (``detail`` then says why and when the next attempt is due)."""

#: close codes after which reconnecting cannot help (API.md "WebSocket"; 4403: API.md v2
#: "Revocation is live" — the user lost access, clients must not reconnect)
CLOSE_ACCESS_REVOKED = 4403
FATAL_CLOSE_CODES = {
    1008: "policy",
    4400: "invalid_since",
    4404: "not_found",
    CLOSE_ACCESS_REVOKED: "access_revoked",
}
CLOSE_TOKEN_EXPIRED = 4401
FATAL_HTTP = frozenset({400, 401, 403, 404})
LONG_POLL_WAIT = 25.0
PAGE_LIMIT = 1000
MAX_SEQ = 2**63 - 1
"""The largest seq either store can hold (a signed 64-bit integer)."""
MAX_PAGES = 10_000


class StreamError(Exception):
    """The stream cannot go on (forbidden, unknown draft, bad credentials, bad ``since``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class AccessRevoked(StreamError):
    """The server revoked the user's access to the draft (close 4403, API.md v2): the stream
    delivered the event that removed them and stopped for good; it never reconnects."""

    def __init__(self, message: str) -> None:
        super().__init__("access_revoked", message)


class BadFrame(ValueError):
    """A WebSocket frame or an ``/events`` reply is not what API.md promises."""


class _Unavailable(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("server unavailable")
        self.retry_after = retry_after


class _End:
    """Queued when the stream is closed, to wake a waiting consumer."""


StatusT = TypeVar("StatusT", bound=str)
"""The status values of one kind of connection (a ``Literal`` of strings)."""


class ConnectionLifecycle(Generic[StatusT]):
    """The background task, status reporting and credentials of one resuming connection.

    A subclass sets every attribute annotated here in its ``__init__`` and provides ``_run``
    (the task: connect, serve, reconnect), ``_task_ended`` (the guard for a task that ended
    other than through ``close()``) and ``close()`` (which calls :meth:`_stop` first).
    ``_status_log`` prefixes the status changes logged on ``_logger``.
    """

    status: StatusT
    status_history: list[StatusT]
    on_status: Callable[[StatusT, str], None] | None
    token: str | None
    user_id: str | None
    _status_changed: asyncio.Event
    _session: aiohttp.ClientSession | None
    _task: asyncio.Task[None] | None
    _closed: bool
    _status_log: str
    _logger: logging.Logger

    async def _run(self) -> None:
        raise NotImplementedError

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Stop the connection (idempotent)."""
        raise NotImplementedError

    def _start(self, task_name: str) -> None:
        """Open the HTTP session and start the background task (from ``__aenter__``)."""
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run(), name=task_name)
        self._task.add_done_callback(self._task_ended)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _stop(self) -> bool:
        """Mark closed, cancel and await the task, close the session; False if already closed."""
        if self._closed:
            return False
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()
        return True

    async def wait_for_status(self, *statuses: StatusT, timeout: float = 30.0) -> StatusT:
        """Wait (at most ``timeout`` s, else ``TimeoutError``) until ``status`` is one of
        ``statuses`` (for tests and dashboards)."""
        async with asyncio.timeout(timeout):
            while self.status not in statuses:
                self._status_changed.clear()
                await self._status_changed.wait()
        return self.status

    def _set_status(self, status: StatusT, detail: str = "") -> None:
        if status != self.status:
            self._logger.info("%s: %s -> %s %s", self._status_log, self.status, status, detail)
            self.status = status
            self.status_history.append(status)
            self._status_changed.set()
            self._tell(status, detail)

    def _tell(self, status: StatusT, detail: str) -> None:
        if self.on_status is not None:
            try:
                self.on_status(status, detail)
            except Exception:  # the caller's callback must not end the connection
                self._logger.exception("on_status callback failed")

    def _headers(self) -> dict[str, str]:
        try:
            return auth_headers(self.token, self.user_id)
        except ValueError as e:  # a get_token that returned what no header can carry
            raise StreamError("unauthorized", str(e)) from None


class DraftStream(ConnectionLifecycle[Status]):
    """``async with DraftStream(url, draft_id, user_id="alice") as s: async for e in s: …``"""

    def __init__(
        self,
        base_url: str,
        draft_id: str,
        token: str | None = None,
        user_id: str | None = None,
        since: int = 0,
        *,
        get_token: Callable[[], Awaitable[str]] | None = None,
        backoff: Backoff | None = None,
        poll_retry: float = 1.0,
        long_poll_wait: float = LONG_POLL_WAIT,
        queue_size: int = 1000,
        on_status: StatusCallback | None = None,
        on_presence: PresenceCallback | None = None,
    ) -> None:
        """Raise ``ValueError`` at once for a base URL that is not ``http(s)://host[:port]``,
        for no credentials, or for a negative ``since``; everything later is reported through
        the iteration (:class:`StreamError`) or ``on_status``."""
        auth_headers(token, user_id)  # fail early without credentials
        if isinstance(since, bool) or not isinstance(since, int) or since < 0:
            raise ValueError(f"since must be an integer >= 0, not {since!r}")
        self.base_url = checked_base_url(base_url)
        self.draft_id = draft_id
        self._draft_path = urllib.parse.quote(draft_id, safe="")
        self.on_status = on_status
        self._status_log = f"draft {draft_id}"
        self._logger = log
        self.token = token
        self.user_id = user_id
        self.get_token = get_token
        self.status: Status = "offline"
        self.status_history: list[Status] = ["offline"]
        self.last_seq = since
        self._orderer: SeqOrderer[Event] = SeqOrderer(since)
        self._backoff = backoff or Backoff()
        self._poll_retry = poll_retry
        self._long_poll_wait = long_poll_wait
        self._queue: asyncio.Queue[Event | BaseException | _End] = asyncio.Queue(queue_size)
        self._status_changed = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_failure = ""
        self._closed = False
        self._error: BaseException | None = None
        self.on_presence = on_presence
        self.presence: dict[str, dict[str, Any]] = {}
        """Who is on the draft now, by user id: ``{"user_id", "state", "since"}`` (API.md v2),
        from the last ``presence_sync`` and the ``presence`` messages after it; empty while the
        stream is not live (presence needs the socket)."""
        self._presence_state: dict[str, Any] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    # -- lifetime ------------------------------------------------------------------------

    async def __aenter__(self) -> DraftStream:
        self._start(f"DraftStream {self.draft_id}")
        return self

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """The last guard: a task that ended other than through :meth:`close` wakes the consumer."""
        if self._closed:
            return
        if task.cancelled():  # cancelled by someone else: say so rather than leave a consumer waiting
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(StreamError("internal_error", "the stream's task was cancelled"))

    async def close(self) -> None:
        """Stop the connection; a consumer waiting for an event gets the end of iteration."""
        if not await self._stop():
            return
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_End())

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        if self._error is not None:
            raise self._error  # the stream ended with it: every later call says so again
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, _End):
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._error = item
            raise item
        self.last_seq = item.seq
        return item

    # -- presence (API.md v2) ------------------------------------------------------------

    async def set_presence(self, state: dict[str, Any]) -> None:
        """Set this user's presence state on the draft (a JSON object, at most 512 bytes).

        Sent at once when the socket is live, and again after every reconnect; while polling
        it waits for the socket. Raises ``ValueError`` for a state the server would refuse.
        """
        if not isinstance(state, dict) or len(orjson.dumps(state)) > 512:
            raise ValueError("a presence state is a JSON object of at most 512 bytes")
        self._presence_state = state
        await self._send_presence()

    async def _send_presence(self) -> None:
        ws = self._ws
        if ws is None or ws.closed or self._presence_state is None:
            return
        message = orjson.dumps({"type": "presence", "state": self._presence_state}).decode()
        with contextlib.suppress(ConnectionError, RuntimeError):  # the reconnect sends it again
            await ws.send_str(message)  # a text frame: the server refuses binary ones

    def _take_presence(self, obj: dict[str, Any]) -> None:
        if obj["type"] == "presence_sync":
            members = obj.get("members")
            if not isinstance(members, list):
                return
            self.presence = {m["user_id"]: m for m in members if isinstance(m, dict) and "user_id" in m}
        else:
            user_id = obj.get("user_id")
            if not isinstance(user_id, str):
                return
            if obj.get("event") == "leave":
                self.presence.pop(user_id, None)
            else:
                since = self.presence.get(user_id, {}).get("since", obj.get("ts"))
                self.presence[user_id] = {"user_id": user_id, "state": obj.get("state"), "since": since}
        if self.on_presence is not None:
            try:
                self.on_presence(obj)
            except Exception:  # the caller's callback must not end the stream
                log.exception("on_presence callback failed")

    # -- the connection ------------------------------------------------------------------

    async def _run(self) -> None:
        """The one background task; whatever ends it is handed to the consumer."""
        try:
            while True:
                retry_after = await self._stream_socket()
                if retry_after == 0:
                    continue  # a fresh token: reconnect at once
                delay = self._backoff.next_delay(retry_after)
                if self.status != "live" and self._last_failure:
                    self._tell(self.status, f"{self._last_failure}; retrying in {delay:.1f} s")
                await self._poll_until(asyncio.get_running_loop().time() + delay)
        except StreamError as e:
            self._set_status("offline", str(e))
            await self._queue.put(e)
        except Exception as e:  # a bug or a surprise: the consumer must hear of it, not wait
            log.exception("draft %s: the stream stopped", self.draft_id)
            self._set_status("offline", str(e))
            await self._queue.put(StreamError("internal_error", f"{type(e).__name__}: {e}"))

    def _http(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use DraftStream with 'async with'"
        return self._session

    async def _deliver(self, events: list[Event]) -> None:
        for event in self._orderer.offer_all(events):
            await self._queue.put(event)
        if self._orderer.has_gap:
            await self._fill_gap()

    async def _fill_gap(self) -> None:
        for _ in range(MAX_PAGES):
            if not self._orderer.has_gap:
                return
            events, _head = await self._fetch_events(self._orderer.last_seq, 0)
            if not events:
                return
            for event in self._orderer.offer_all(events):
                await self._queue.put(event)

    async def _stream_socket(self) -> float | None:
        """Stream until the socket ends; the ``Retry-After`` hint (0: retry at once)."""
        url = websocket_url(self.base_url) + f"/v1/ws/drafts/{self._draft_path}"
        last_error: dict[str, Any] = {}
        if self.status == "offline" and not self._last_failure:
            self._tell("offline", f"connecting to {self.base_url}")
        try:
            async with self._http().ws_connect(
                url,
                params={"since": str(self._orderer.last_seq)},
                headers=self._headers(),
                heartbeat=30.0,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
            ) as ws:
                self._ws = ws
                async for msg in ws:
                    try:
                        obj = self._message_of(msg)
                    except BadFrame as e:
                        log.warning(
                            "draft %s: skipped a bad frame (%s); resyncing from /events", self.draft_id, e
                        )
                        await self._resync()
                        continue
                    kind = obj["type"]
                    if kind == "connected":
                        self._last_failure = ""
                        self._set_status("live")
                        self._backoff.reset()
                        await self._send_presence()
                    elif kind in ("presence_sync", "presence"):
                        self._take_presence(obj)
                    elif kind == "error":
                        last_error = obj
                    elif isinstance(obj.get("event"), Event):
                        await self._deliver([obj["event"]])
                code = ws.close_code
        except aiohttp.WSServerHandshakeError as e:
            if e.status in FATAL_HTTP - {404}:
                raise StreamError("unauthorized" if e.status == 401 else "forbidden", e.message) from e
            retry = parse_retry_after(e.headers.get("Retry-After") if e.headers else None)
            self._last_failure = f"WebSocket refused with HTTP {e.status}"
            return retry
        except (*TRANSIENT_ERRORS, _Unavailable) as e:
            self._last_failure = f"server not reachable at {self.base_url} ({_reason(e)})"
            return None
        finally:
            self._ws = None
            self.presence = {}  # presence needs the socket: the next presence_sync refills it
        self._last_failure = f"socket closed ({code})"
        return await self._after_close(code, last_error)

    def _message_of(self, msg: aiohttp.WSMessage) -> dict[str, Any]:
        """A server message as a dict whose ``type`` is a str; an event is parsed into ``"event"``.

        Raises :class:`BadFrame` for a binary frame, text that is not a JSON object, a message
        without a string ``type``, or an event that is not API.md's envelope for this draft.
        """
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise BadFrame(f"a {msg.type.name} frame where text was expected")
        try:
            obj = orjson.loads(msg.data)
        except orjson.JSONDecodeError as e:
            raise BadFrame(f"not JSON: {e}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            raise BadFrame("not a JSON object with a string 'type'")
        if obj["type"].startswith(EVENT_TYPE_PREFIX):
            return {"type": obj["type"], "event": self._event_of(obj)}
        return obj

    def _event_of(self, obj: Any) -> Event:
        """API.md's envelope for this draft, checked strictly, or :class:`BadFrame`."""
        try:
            event = Event.model_validate(obj, strict=True)
        except ValidationError as e:
            raise BadFrame(f"not an event envelope ({e.error_count()} field errors)") from None
        if event.draft_id != self.draft_id or not 1 <= event.seq <= MAX_SEQ:
            raise BadFrame(f"event {event.draft_id!r}#{event.seq} does not belong to this stream")
        return event

    async def _resync(self) -> None:
        """After a bad frame: fetch what the log has after ``last_seq``, so nothing is missed."""
        try:
            events, _head = await self._fetch_events(self._orderer.last_seq, 0)
        except _Unavailable:
            return  # the socket's next events (or the next reconnect) will find the gap
        await self._deliver(events)

    async def _after_close(self, code: int | None, last_error: dict[str, Any]) -> float | None:
        reason = str(last_error.get("message", ""))
        if code in FATAL_CLOSE_CODES:
            error_code = str(last_error.get("code") or FATAL_CLOSE_CODES[code])
            if code == CLOSE_ACCESS_REVOKED:
                raise AccessRevoked(reason or "you no longer have access to this draft")
            if error_code != "rate_limited":  # a flood close is ours to slow down, not the end
                raise StreamError(error_code, reason or f"socket closed with {code}")
        if code == CLOSE_TOKEN_EXPIRED:
            if self.get_token is None:
                raise StreamError("token_expired", "the token expired and no get_token was given")
            self.token = await self.get_token()
            return 0
        return None  # 1001 shutting down, 1013 too slow, 1006 dropped: resume with since

    async def _fetch_events(self, since: int, wait: float) -> tuple[list[Event], int]:
        params = {"since": str(since), "limit": str(PAGE_LIMIT)}
        if wait > 0:
            params["wait"] = format_wait(wait)
        url = f"{self.base_url}/v1/collab/drafts/{self._draft_path}/events"
        try:
            async with self._http().get(
                url, params=params, headers=self._headers(), timeout=aiohttp.ClientTimeout(total=wait + 15)
            ) as r:
                raw = await r.read()
                if r.status in FATAL_HTTP:
                    try:
                        err = orjson.loads(raw)["error"]
                        raise StreamError(str(err["code"]), str(err.get("message", "")))
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        raise StreamError("http_error", f"HTTP {r.status}") from None
                if r.status != 200:
                    raise _Unavailable(parse_retry_after(r.headers.get("Retry-After")))
        except TRANSIENT_ERRORS as e:
            self._last_failure = f"server not reachable at {self.base_url} ({_reason(e)})"
            raise _Unavailable() from e
        try:
            reply = orjson.loads(raw)
            events = [self._event_of(e) for e in reply["data"]]
            head = reply["head_seq"]
            if isinstance(head, bool) or not isinstance(head, int):
                raise BadFrame("head_seq is not an integer")
        except (orjson.JSONDecodeError, KeyError, TypeError, BadFrame) as e:
            # a server that answers 200 with something else is not one this client can follow
            raise StreamError("bad_response", f"GET {url} did not answer API.md's JSON: {e}") from None
        return events, head

    async def _poll_until(self, deadline: float) -> None:
        """Long-poll ``/events`` until the next socket attempt is due."""
        loop = asyncio.get_running_loop()
        for _ in range(MAX_PAGES):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                events, _head = await self._fetch_events(
                    self._orderer.last_seq, min(self._long_poll_wait, remaining)
                )
            except _Unavailable as e:
                self._set_status("offline", self._last_failure)
                pause = max(self._poll_retry, e.retry_after or 0.0)
                await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
                continue
            self._set_status("polling")
            await self._deliver(events)


def _reason(error: BaseException) -> str:
    """A short, one-line reason for a connection failure."""
    text = str(error).splitlines()[0] if str(error) else ""
    return text or type(error).__name__
