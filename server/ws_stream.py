"""Streaming an admitted draft socket: catch-up then live, pings, flood limit, every close.

Presence (API.md v2): the socket attaches to the node's presence registry and writes
``presence_sync`` right after ``connected`` and before it subscribes, takes ``presence`` updates
(:class:`server.presence_wire.PresenceInput`), and detaches as soon as its stream ends, whatever the
reason (a revocation included), so the others hear the ``leave`` at once.

Close reasons (API.md "WebSocket"; codes from RFC 6455 §7.4.1 unless 4xxx): a client flooding
messages 1008, a token that expires 4401, a socket that falls too far behind 1013, a server
shutting down 1001, an internal error 1011, the user's view access revoked 4403 (API.md v2:
after the removal event, ``{"type": "error", "code": "access_revoked", "draft_id"}``), and the
peer's own Close (answered).

A decision to close is final (issue "delivery after a decision to close"): the moment it is
taken, the socket's sink refuses writes, and before the Close frame is sent the subscriber is
unsubscribed and the socket's tasks are cancelled. Nothing is written after the Close frame,
however long the peer takes to answer it (at most ``CLOSE_TIMEOUT``, then the connection is
dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMessage, WSMsgType, web

from eventstore.events import utc_now_iso
from projections.access import ViewAccess
from server.presence_wire import PresenceInput, sync_frame
from server.subscriber import (
    CLOSE_ACCESS_REVOKED,
    CLOSE_INTERNAL_ERROR,
    CLOSE_TRY_AGAIN_LATER,
    TransportSink,
)
from server.ws_registry import CLOSE_GOING_AWAY, SocketTasks

if TYPE_CHECKING:
    from server.state import AppState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Admission:
    """A socket allowed to stream: whose, which draft, from which seq; ``head_seq`` at admission."""

    draft_id: str
    user_id: str
    since: int
    head_seq: int
    expires_at: float | None
    """When REST starts refusing the token (Unix seconds: ``exp`` + leeway, ``Identity.expires_at``);
    None for dev auth."""
    access: ViewAccess | None = None
    """The user's view access as of the state admitted against; the subscriber folds the
    removals after it (API.md v2 "Revocation is live")."""


CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_INVALID_SINCE = 4400
CLOSE_TOKEN_EXPIRED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_TIMEOUT = 5.0
"""Seconds a close handshake may take before the connection is dropped."""

__all__ = [
    "CLOSE_ACCESS_REVOKED",
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_INVALID_SINCE",
    "CLOSE_NOT_FOUND",
    "CLOSE_POLICY",
    "CLOSE_TIMEOUT",
    "CLOSE_TOKEN_EXPIRED",
    "CLOSE_TRY_AGAIN_LATER",
    "Closer",
    "FloodGate",
    "expire",
    "stream_events",
]


SOCKET_ENDED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)
"""What ``receive`` returns once the peer closed or the socket is closing: where ``async for``
over a socket stops."""


def _message(kind: str, **fields: Any) -> bytes:
    return orjson.dumps({"type": kind, **fields})


async def stream_events(
    request: web.Request, ws: web.WebSocketResponse, st: AppState, admission: Admission
) -> None:
    """Run an admitted socket until it closes: ``connected``, catch-up, live, then the close."""
    transport = request.transport
    if transport is None:
        return  # the peer closed the connection between the upgrade and here: nothing to run
    sink = TransportSink(transport, ws)
    closer = Closer(ws, transport, sink)
    tasks = SocketTasks(st.sockets)
    user_id = admission.user_id
    presence = PresenceInput(
        st.presence,
        admission.draft_id,
        user_id,
        ws,  # the socket is its own key: one attachment per socket (server.presence)
        rate=st.settings.presence_rate,
        on_coalesced=st.metrics.presence_coalesced.inc,
    )
    ends = _SocketEnds(st, admission.draft_id, user_id, ws, closer, presence)

    st.sockets.add(user_id, ws, closer.close)
    st.metrics.open_sockets.inc()
    sub = None
    try:
        await ws.send_frame(
            _message(
                "connected",
                draft_id=admission.draft_id,
                user_id=user_id,
                ts=utc_now_iso(),
                head_seq=admission.head_seq,
            ),
            WSMsgType.TEXT,
        )
        if closer.code is None:
            # presence (API.md v2): attach, presence_sync, subscribe, with no await between, so
            # the sync precedes every presence message and every event (server.presence_wire)
            st.presence.attach(admission.draft_id, user_id, ws)
            ends.attached = True
            sink.write(sync_frame(st.presence, admission.draft_id))
            sub = st.hub.subscribe(
                admission.draft_id,
                sink,
                admission.since,
                spawn=tasks.spawn,
                request_close=ends.request_close,
                access=admission.access,
            )
        if admission.expires_at is not None:
            # the same rule as REST: a token is good until exp + leeway (API.md "Authentication"),
            # the moment server.auth.token_valid_until computed for this identity
            tasks.spawn(expire(closer, admission.expires_at))
        if closer.start_reading():
            try:
                # the read loop, here rather than in a coroutine of its own: one frame less per
                # idle socket; _answer decides what each message gets
                flood = FloodGate(st.settings.ws_flood_limit)
                while True:
                    stop, reply = _answer(await ws.receive(), flood, closer, presence)
                    if reply is not None:
                        await ws.send_frame(reply, WSMsgType.TEXT)
                    if stop:
                        break
            except asyncio.CancelledError:
                if not closer.absorbs_cancel():
                    raise
            finally:
                closer.stop_reading()
    except (ConnectionError, RuntimeError):
        pass
    finally:
        # the decision to close is final: stop delivery before anything else is sent
        sink.start_closing()
        if sub is not None:
            st.hub.unsubscribe(sub)
        ends.end_presence()  # the others hear the leave now, not after our close handshake
        tasks.cancel_all()
        try:
            await closer.send_close()
        finally:
            st.sockets.remove(user_id, ws)
            st.metrics.open_sockets.dec()
            closer.finish()


class _SocketEnds:
    """How an admitted per-draft socket's presence ends, and the close its subscriber requests
    (``request_close``, given to the hub): methods of one small object rather than closures of
    :func:`stream_events`, whose cells would live as long as the socket."""

    __slots__ = ("attached", "closer", "draft_id", "presence", "st", "user_id", "ws")

    def __init__(
        self,
        st: AppState,
        draft_id: str,
        user_id: str,
        ws: web.WebSocketResponse,
        closer: Closer,
        presence: PresenceInput,
    ) -> None:
        self.st = st
        self.draft_id = draft_id
        self.user_id = user_id
        self.ws = ws
        self.closer = closer
        self.presence = presence
        self.attached = False
        """Whether the socket is attached in the presence registry (until :meth:`end_presence`)."""

    def end_presence(self) -> None:
        """Stop taking presence updates and detach the socket (the others hear its leave)."""
        self.presence.close()
        if self.attached:
            self.attached = False
            self.st.presence.detach(self.draft_id, self.user_id, self.ws)

    def request_close(self, code: int, reason: bytes) -> None:
        """The subscriber's close request: counted when slow (1013); at a revocation, presence
        ends and the ``access_revoked`` error precedes the Close frame."""
        error = None
        if code == CLOSE_TRY_AGAIN_LATER:
            self.st.metrics.slow_closes.inc()
        elif code == CLOSE_ACCESS_REVOKED:
            # presence ends with the revocation (API.md v2), before our close handshake; from
            # the next loop turn, so that every other socket has the removal event first
            self.presence.close()
            asyncio.get_running_loop().call_soon(self.end_presence)
            error = _message(
                "error",
                code="access_revoked",
                draft_id=self.draft_id,
                message="you no longer have access to this draft; do not reconnect",
            )
        self.closer.request(code, reason, error)


class Closer:
    """Closes a socket from its own handler task, whoever asks (overflow, expiry, flood, shutdown).

    aiohttp's ``close()`` called from another task while the handler is reading drops the TCP
    connection right after the close frame, without waiting for the client's reply; an aiohttp
    client then reports 1006 instead of our code. So other tasks only *request* a close: the
    request stops all writes at once (the sink refuses them), then interrupts the handler's read
    (by cancelling it, in the handler's own task: no extra task per socket), and the handler
    sends the ``error`` message if any and the Close frame itself, bounded by ``CLOSE_TIMEOUT``.
    """

    __slots__ = ("_reading", "_waiter", "code", "error", "finished", "sink", "transport", "ws")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport, sink: TransportSink) -> None:
        self.ws = ws
        self.transport = transport
        self.sink = sink
        self.code: tuple[int, bytes] | None = None
        self.error: bytes | None = None
        self.finished = False
        self._waiter: asyncio.Future[None] | None = None  # made only when someone waits (shutdown)
        self._reading: asyncio.Task[Any] | None = None

    def request(self, code: int, reason: bytes, error: bytes | None = None) -> None:
        """Decide to close with ``code`` (the first decision wins), sending ``error`` before it.

        From this call on the sink refuses every write: no event follows the decision.
        """
        if self.code is not None:
            return
        self.code = (code, reason)
        self.error = error
        self.sink.start_closing()
        # from the next loop turn, so the handler is surely suspended in its read when cancelled
        asyncio.get_running_loop().call_soon(self._interrupt)

    def _interrupt(self) -> None:
        if self._reading is not None:
            self._reading.cancel()

    async def close(self, code: int, reason: bytes) -> None:
        """Request a close and wait until the handler has finished with the socket."""
        self.request(code, reason)
        if not self.finished:
            if self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._waiter)

    def finish(self) -> None:
        """The handler is done with the socket: wake whoever waits in :meth:`close`."""
        self.finished = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def start_reading(self) -> bool:
        """Before the handler's read loop: False when a close is already requested (then do not
        read), else True, and from now on a close request interrupts the read.

        The handler runs the loop itself, not through a coroutine of ours (one frame less alive
        per idle socket)::

            if closer.start_reading():
                try:
                    await read_loop
                except asyncio.CancelledError:
                    if not closer.absorbs_cancel():
                        raise
                finally:
                    closer.stop_reading()
        """
        if self.code is not None:
            return False
        self._reading = asyncio.current_task()
        return True

    def absorbs_cancel(self) -> bool:
        """Whether the read's cancellation was our own close request's (absorbed: the handler
        goes on to close) rather than anyone else's (which must go on)."""
        task = self._reading
        return self.code is not None and task is not None and task.uncancel() == 0

    def stop_reading(self) -> None:
        """The read loop is over: a close request no longer interrupts the handler."""
        self._reading = None

    async def send_close(self) -> None:
        """Send the ``error`` message (if any) and the Close frame, and wait for the peer's reply.

        A peer that does not answer within ``CLOSE_TIMEOUT`` has its connection dropped. With no
        close requested, this answers the peer's Close (or finishes a connection already gone).
        """
        ws = self.ws
        if ws.closed:
            return
        code, reason = self.code if self.code is not None else (CLOSE_NORMAL, b"")
        try:
            if self.error is not None and not ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_frame(self.error, WSMsgType.TEXT)
            await asyncio.wait_for(ws.close(code=code, message=reason), CLOSE_TIMEOUT)
        except TimeoutError:
            self.transport.abort()  # a peer that never reads would hold the socket forever
        except (ConnectionError, RuntimeError):
            pass


class FloodGate:
    """Counts a socket's client messages per one-second window (API.md "WebSocket" item 4:
    more than ``limit`` a second, default 50, closes the socket with 1008; 0 = no limit)."""

    __slots__ = ("count", "limit", "window_start")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.window_start = time.monotonic()
        self.count = 0

    def exceeded(self) -> bool:
        """Count one message; True when it is over the limit of its window."""
        now = time.monotonic()
        if now - self.window_start >= 1.0:
            self.window_start, self.count = now, 0
        self.count += 1
        return bool(self.limit) and self.count > self.limit

    @staticmethod
    def close(closer: Closer) -> None:
        """Close the flooding socket: ``rate_limited``, then 1008."""
        closer.request(
            CLOSE_POLICY,
            b"flood",
            _message("error", code="rate_limited", message="too many messages; slow down"),
        )


async def expire(closer: Closer, deadline: float) -> None:
    """Close with 4401 when the socket's token stops being valid (``deadline``, Unix seconds)."""
    await asyncio.sleep(max(0.0, deadline - time.time()))
    closer.request(
        CLOSE_TOKEN_EXPIRED,
        b"token_expired",
        _message("error", code="token_expired", message="your token expired; reconnect with a fresh one"),
    )


def _answer(
    msg: WSMessage, flood: FloodGate, closer: Closer, presence: PresenceInput
) -> tuple[bool, bytes | None]:
    """One client message on the per-draft socket: (stop reading?, the message to send back).

    Answers pings, takes presence updates (API.md v2), refuses anything else (``bad_message``),
    closes floods (1008). The log is read-only from here: nothing a client sends is appended.
    The handler's read loop (:func:`stream_events`) receives and sends; this decides.
    """
    if msg.type in SOCKET_ENDED:
        return True, None
    if flood.exceeded():
        flood.close(closer)
        return True, None
    if msg.type == WSMsgType.TEXT:
        try:
            parsed = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            parsed = None
        kind = parsed.get("type") if isinstance(parsed, dict) else None
        if kind == "ping":
            return False, _message("pong", ts=utc_now_iso())
        if kind == "presence":
            assert isinstance(parsed, dict)
            return False, presence.receive(parsed)
        return False, _message(
            "error",
            code="bad_message",
            message='send only {"type": "ping"} or {"type": "presence", "state": {…}}',
        )
    if msg.type == WSMsgType.BINARY:
        return False, _message("error", code="bad_message", message="binary frames are not accepted")
    return msg.type == WSMsgType.ERROR, None
