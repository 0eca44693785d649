"""``DraftStream``: every event of a draft exactly once, in seq order, whatever the network does.

One background task owns the connection. It streams the WebSocket from ``since = last_seq``;
when the socket cannot open or drops, it long-polls ``/events?since=…&wait=…`` until the next
socket attempt is due (exponential backoff with full jitter, never sooner than ``Retry-After``).
Every delivery, from either channel, goes through one :class:`SeqOrderer`, so overlaps are
dropped and holes are filled from ``/events`` before anything after them is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Literal

import aiohttp
import orjson

from projections.event_types import EVENT_TYPE_PREFIX
from ringlog.backoff import Backoff, parse_retry_after
from ringlog.models import Event
from ringlog.ordering import SeqOrderer
from ringlog.rest import TRANSIENT_ERRORS, auth_headers

log = logging.getLogger(__name__)

Status = Literal["live", "polling", "offline"]

#: close codes after which reconnecting cannot help (API.md "WebSocket")
FATAL_CLOSE_CODES = {1008: "policy", 4400: "invalid_since", 4404: "not_found"}
CLOSE_TOKEN_EXPIRED = 4401
FATAL_HTTP = frozenset({400, 401, 403, 404})
LONG_POLL_WAIT = 25.0
PAGE_LIMIT = 1000
MAX_PAGES = 10_000


class StreamError(Exception):
    """The stream cannot go on (forbidden, unknown draft, bad credentials, bad ``since``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _Unavailable(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("server unavailable")
        self.retry_after = retry_after


class _End:
    """Queued when the stream is closed, to wake a waiting consumer."""


class DraftStream:
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
    ) -> None:
        auth_headers(token, user_id)  # fail early without credentials
        self.base_url = base_url.rstrip("/")
        self.draft_id = draft_id
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
        self._closed = False
        self._error: BaseException | None = None

    # -- lifetime ------------------------------------------------------------------------

    async def __aenter__(self) -> DraftStream:
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run(), name=f"DraftStream {self.draft_id}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the connection; a consumer waiting for an event gets the end of iteration."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()
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

    async def wait_for_status(self, *statuses: Status, timeout: float = 30.0) -> Status:
        """Wait until ``status`` is one of ``statuses`` (for tests and dashboards)."""
        async with asyncio.timeout(timeout):
            while self.status not in statuses:
                self._status_changed.clear()
                await self._status_changed.wait()
        return self.status

    def _set_status(self, status: Status) -> None:
        if status != self.status:
            log.info("draft %s: %s -> %s", self.draft_id, self.status, status)
            self.status = status
            self.status_history.append(status)
            self._status_changed.set()

    # -- the connection ------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                retry_after = await self._stream_socket()
                if retry_after == 0:
                    continue  # a fresh token: reconnect at once
                delay = self._backoff.next_delay(retry_after)
                await self._poll_until(asyncio.get_running_loop().time() + delay)
        except StreamError as e:
            self._set_status("offline")
            await self._queue.put(e)

    def _headers(self) -> dict[str, str]:
        return auth_headers(self.token, self.user_id)

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
        url = self.base_url.replace("http", "ws", 1) + f"/v1/ws/drafts/{self.draft_id}"
        last_error: dict[str, Any] = {}
        try:
            async with self._http().ws_connect(
                url,
                params={"since": str(self._orderer.last_seq)},
                headers=self._headers(),
                heartbeat=30.0,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
            ) as ws:
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    obj = orjson.loads(msg.data)
                    kind = obj.get("type", "")
                    if kind == "connected":
                        self._set_status("live")
                        self._backoff.reset()
                    elif kind == "error":
                        last_error = obj
                    elif kind.startswith(EVENT_TYPE_PREFIX):
                        await self._deliver([Event.model_validate(obj)])
                code = ws.close_code
        except aiohttp.WSServerHandshakeError as e:
            if e.status in FATAL_HTTP - {404}:
                raise StreamError("unauthorized" if e.status == 401 else "forbidden", e.message) from e
            retry = parse_retry_after(e.headers.get("Retry-After") if e.headers else None)
            return retry
        except (*TRANSIENT_ERRORS, _Unavailable):
            return None
        return await self._after_close(code, last_error)

    async def _after_close(self, code: int | None, last_error: dict[str, Any]) -> float | None:
        reason = str(last_error.get("message", ""))
        if code in FATAL_CLOSE_CODES:
            error_code = str(last_error.get("code") or FATAL_CLOSE_CODES[code])
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
            params["wait"] = f"{wait:.3f}"
        url = f"{self.base_url}/v1/collab/drafts/{self.draft_id}/events"
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
            raise _Unavailable() from e
        reply = orjson.loads(raw)
        return [Event.model_validate(e) for e in reply["data"]], int(reply["head_seq"])

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
                self._set_status("offline")
                pause = max(self._poll_retry, e.retry_after or 0.0)
                await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
                continue
            self._set_status("polling")
            await self._deliver(events)
