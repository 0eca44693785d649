"""``/v1/ws/drafts/{id}?since=N``: the read-only event stream (API.md, "WebSocket")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from eventstore.events import utc_now_iso
from server.errors import ApiError, error_response
from server.hub import CLOSE_TRY_AGAIN_LATER, Subscriber
from server.service import is_draft_id
from server.state import AppState

log = logging.getLogger(__name__)

CLOSE_POLICY = 1008
CLOSE_GOING_AWAY = 1001
CLOSE_INVALID_SINCE = 4400
CLOSE_TOKEN_EXPIRED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_TIMEOUT = 5.0
"""Seconds a close handshake may take before the connection is dropped."""


async def _refuse(
    ws: web.WebSocketResponse, code: str, message: str, close_code: int
) -> web.WebSocketResponse:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_frame(orjson.dumps({"type": "error", "code": code, "message": message}), WSMsgType.TEXT)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.close(code=close_code, message=code.encode())
    return ws


def _message(kind: str, **fields: Any) -> bytes:
    return orjson.dumps({"type": kind, **fields})


async def draft_socket(request: web.Request) -> web.StreamResponse:
    """Authenticate, check access, catch up from ``since``, then stream live events."""
    st: AppState = request.app[AppState.KEY]
    settings = st.settings
    if not settings.ws_enabled:
        return error_response(503, "unavailable", "WebSockets are switched off on this server; poll /events")
    origin = request.headers.get("Origin")
    if settings.allowed_origins and origin is not None and origin not in settings.allowed_origins:
        return error_response(403, "forbidden", "this Origin is not allowed")
    if st.sockets.closing:
        return error_response(503, "unavailable", "server is shutting down", headers={"Retry-After": "1"})
    ws = web.WebSocketResponse(
        heartbeat=settings.ws_ping_interval,
        compress=False,
        max_msg_size=4096,
        timeout=5.0,
    )
    await ws.prepare(request)
    draft_id = request.match_info["draft_id"]

    try:
        identity = await st.auth.identify(request.headers, request.query, websocket=True)
    except ApiError as e:
        return await _refuse(ws, "unauthorized", e.message, CLOSE_POLICY)
    user_id = identity.user_id
    if not is_draft_id(draft_id):  # never sent to the store (issue 10, item 6)
        return await _refuse(ws, "not_found", "draft not found", CLOSE_NOT_FOUND)
    try:
        state = await st.projector.get(draft_id)
    except Exception:
        log.warning("socket for %r: store unavailable", draft_id, exc_info=True)
        return await _refuse(
            ws, "unavailable", "storage is unavailable; retry shortly", CLOSE_TRY_AGAIN_LATER
        )
    if state is None:
        return await _refuse(ws, "not_found", "draft not found", CLOSE_NOT_FOUND)
    if not state.can_view(user_id):
        return await _refuse(ws, "forbidden", "you are not a collaborator on this draft", CLOSE_POLICY)
    head = state.seq
    raw_since = request.query.get("since")
    if raw_since is None:
        since = head
    else:
        try:
            since = int(raw_since)
        except ValueError:
            since = -1
        if since > head:
            # the projection follows commits a moment after they are readable, and a client may
            # have seen the newest events from the log in a catch-up: the log's head decides
            with contextlib.suppress(Exception):
                head = max(head, await st.store.head(draft_id))
        if not 0 <= since <= head:
            return await _refuse(
                ws, "invalid_since", f"since must be an integer from 0 to {head}", CLOSE_INVALID_SINCE
            )
    cap = settings.max_sockets_per_user
    if cap and st.sockets.count(user_id) >= cap:
        return await _refuse(ws, "too_many_sockets", f"at most {cap} sockets per user", CLOSE_POLICY)

    transport = request.transport
    assert transport is not None

    closer = _Closer(ws, transport)

    def on_overflow(sub: Subscriber) -> None:
        st.metrics.slow_closes.inc()
        closer.request(CLOSE_TRY_AGAIN_LATER, b"too slow: reconnect with since")

    sub = Subscriber(
        draft_id,
        transport,
        on_overflow,
        settings.ws_queue_size,
        st.metrics.fanout_lag.observe,
    )
    st.sockets.add(user_id, ws, closer.close)
    st.metrics.open_sockets.inc()
    st.hub.subscribe(sub)  # buffer live events before catching up: the seam has no gap
    tasks: list[asyncio.Task[Any]] = []
    try:
        await ws.send_frame(
            _message("connected", draft_id=draft_id, user_id=user_id, ts=utc_now_iso(), head_seq=head),
            WSMsgType.TEXT,
        )

        def resync() -> None:
            tasks.append(st.sockets.spawn(st.hub.catch_up_then_live(sub, sub.last_seq)))

        sub.resync = resync
        tasks.append(st.sockets.spawn(st.hub.catch_up_then_live(sub, since)))
        if identity.expires_at is not None:
            tasks.append(st.sockets.spawn(_expire(ws, closer, identity.expires_at)))
        await closer.read_until_closed(_read_loop(ws, settings.ws_flood_limit))
    except (ConnectionError, RuntimeError):
        pass
    finally:
        st.hub.unsubscribe(sub)
        for task in tasks:
            task.cancel()
        st.sockets.remove(user_id, ws)
        st.metrics.open_sockets.dec()
        if not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT)
        closer.finish()
    return ws


class _Closer:
    """Closes a socket from its own handler task, whoever asks (overflow, expiry, shutdown).

    aiohttp's ``close()`` called from another task while the handler is reading drops the TCP
    connection right after the close frame, without waiting for the client's reply; an aiohttp
    client then reports 1006 instead of our code. So other tasks only *request* a close: that
    interrupts the handler's read (by cancelling it, in the handler's own task: no extra task
    per socket) and the handler runs the close handshake itself, bounded by ``CLOSE_TIMEOUT``.
    """

    __slots__ = ("_reading", "_waiter", "code", "finished", "transport", "ws")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport) -> None:
        self.ws = ws
        self.transport = transport
        self.code: tuple[int, bytes] | None = None
        self.finished = False
        self._waiter: asyncio.Future[None] | None = None  # made only when someone waits (shutdown)
        self._reading: asyncio.Task[Any] | None = None

    def request(self, code: int, message: bytes) -> None:
        """Ask the handler to close with ``code`` (the first request wins)."""
        if self.code is None:
            self.code = (code, message)
            # from the next loop turn, so the handler is surely suspended in its read when cancelled
            asyncio.get_running_loop().call_soon(self._interrupt)

    def _interrupt(self) -> None:
        if self._reading is not None:
            self._reading.cancel()

    async def close(self, code: int, message: bytes) -> None:
        """Request a close and wait until the handler has finished with the socket."""
        self.request(code, message)
        if not self.finished:
            if self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._waiter)

    def finish(self) -> None:
        """The handler is done with the socket: wake whoever waits in :meth:`close`."""
        self.finished = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read_until_closed(self, read_loop: Coroutine[Any, Any, None]) -> None:
        """Run the read loop until the peer goes or a close is requested; then close."""
        task = asyncio.current_task()
        assert task is not None
        if self.code is None:
            self._reading = task
            try:
                await read_loop
            except asyncio.CancelledError:
                # our own request's cancel is absorbed; any other cancellation goes on
                if self.code is None or task.uncancel() > 0:
                    raise
            except (ConnectionError, RuntimeError):
                pass
            finally:
                self._reading = None
        else:
            read_loop.close()
        if self.code is not None and not self.ws.closed:
            code, message = self.code
            try:
                await asyncio.wait_for(self.ws.close(code=code, message=message), CLOSE_TIMEOUT)
            except TimeoutError:
                self.transport.abort()  # a peer that never reads would hold the socket forever


async def _expire(ws: web.WebSocketResponse, closer: _Closer, expires_at: float) -> None:
    await asyncio.sleep(max(0.0, expires_at - time.time()))
    if not ws.closed:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_frame(
                _message(
                    "error", code="token_expired", message="your token expired; reconnect with a fresh one"
                ),
                WSMsgType.TEXT,
            )
        closer.request(CLOSE_TOKEN_EXPIRED, b"token_expired")


async def _read_loop(ws: web.WebSocketResponse, flood_limit: int) -> None:
    """The socket is read-only: answer pings, refuse anything else, close floods."""
    window_start = time.monotonic()
    count = 0
    async for msg in ws:
        now = time.monotonic()
        if now - window_start >= 1.0:
            window_start, count = now, 0
        count += 1
        if flood_limit and count > flood_limit:
            await _refuse_flood(ws)
            return
        if msg.type == WSMsgType.TEXT:
            try:
                parsed = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict) and parsed.get("type") == "ping":
                await ws.send_frame(_message("pong", ts=utc_now_iso()), WSMsgType.TEXT)
                continue
            await ws.send_frame(
                _message(
                    "error", code="bad_message", message='the socket is read-only; send only {"type": "ping"}'
                ),
                WSMsgType.TEXT,
            )
        elif msg.type == WSMsgType.BINARY:
            await ws.send_frame(
                _message("error", code="bad_message", message="binary frames are not accepted"),
                WSMsgType.TEXT,
            )
        elif msg.type == WSMsgType.ERROR:
            return


async def _refuse_flood(ws: web.WebSocketResponse) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_frame(
            _message("error", code="rate_limited", message="too many messages; slow down"), WSMsgType.TEXT
        )
        await ws.close(code=CLOSE_POLICY, message=b"flood")
