"""``GET /v1/ws``: one socket, many drafts (API.md v2 "One socket, many drafts").

The socket is admitted like the per-draft one (:mod:`server.ws`: switches and Origin before the
upgrade, then credentials and the per-user socket cap, which it counts toward once), sends
``connected``, and then answers client messages one at a time, in the order they arrive, from a
dispatch table (``subscribe``, ``unsubscribe``, ``ping``, then :attr:`AppState.mux`'s handlers).

Each accepted ``subscribe`` becomes a :class:`MuxSubscription`: a :class:`~server.subscriber.Subscriber`
registered with the hub exactly as a per-draft socket's is (same catch-up→live seam, same
revocation fold), writing into the socket's one :class:`~server.subscriber.TransportSink`, with
a :class:`~server.subscriber.BacklogBudget` shared by all of the socket's subscriptions: the
socket's outbound backlog is bounded in bytes and events summed over its drafts, and a socket
too slow for that sum is closed with 1013. Control messages (``subscribed``, ``unsubscribed``,
``error``, ``pong``) are framed and written into the same sink, so their order against a draft's
events is the order they were written in:

* ``subscribed`` is written before the subscription is registered with the hub: it precedes
  every event of that draft (and :attr:`MuxExtensions.before_events` run between the two);
* ``unsubscribed`` is written after the subscriber is closed (it writes nothing more from that
  moment, its backlog dropped): no event of the draft follows it;
* revocation ends only its subscription: the subscriber delivers up to the removal event, and
  once that is in the sink, ``error`` ``access_revoked`` with the ``draft_id`` is written.

Socket-wide closes (flood 1008, token expiry 4401, 1013, shutdown 1001, 1011) are the per-draft
socket's :class:`~server.ws_stream.Closer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web

from eventstore.events import utc_now_iso
from server.errors import ApiError, to_api_error
from server.frames import text_frame
from server.front import answer_failure
from server.mux_messages import BadMessage, draft_id_of, parse_message, parse_subscribe
from server.state import AppState
from server.subscriber import (
    CLOSE_ACCESS_REVOKED,
    CLOSE_TRY_AGAIN_LATER,
    HIGH_WATER,
    BacklogBudget,
    Subscriber,
    TransportSink,
)
from server.ws import admit_draft, check_socket_cap, refuse, socket_response, upgrade
from server.ws_registry import SocketTasks
from server.ws_stream import SOCKET_ENDED, Closer, FloodGate, expire

if TYPE_CHECKING:
    from server.mux_hooks import MessageHandler

log = logging.getLogger(__name__)


async def multi_socket(request: web.Request) -> web.StreamResponse:
    """``GET /v1/ws``: admit the socket (or refuse it as the per-draft socket does), then serve
    its subscriptions until it closes."""
    st: AppState = request.app[AppState.KEY]
    ws = socket_response(st)
    refused = await upgrade(request, st, ws)
    if refused is not None:
        return refused
    try:
        identity = await st.auth.identify(request.headers, request.query, websocket=True)
        check_socket_cap(st, identity.user_id)  # counts once, whatever it subscribes to
    except Exception as exc:
        await refuse(ws, exc)
        return ws
    transport = request.transport
    if transport is None:
        return ws  # the peer closed the connection between the upgrade and here: nothing to run
    sink = TransportSink(transport, ws)
    session = MuxSession(st, ws, sink, Closer(ws, transport, sink), identity.user_id)
    try:
        await session.run(identity.expires_at)
    except Exception as exc:  # a bug: logged and answered as the front middleware answers any handler's
        return answer_failure(request, exc, st.settings.allowed_origins)
    return ws


class MuxSubscription:
    """One draft followed on a ``/v1/ws`` socket: its subscriber and its own tasks."""

    __slots__ = ("draft_id", "ended", "head_seq", "since", "subscriber", "tasks")

    def __init__(self, draft_id: str, since: int, head_seq: int, tasks: SocketTasks) -> None:
        self.draft_id = draft_id
        self.since = since
        self.head_seq = head_seq
        self.tasks = tasks
        self.subscriber: Subscriber | None = None
        self.ended = False


class MuxSession:
    """One admitted ``/v1/ws`` socket: its subscriptions by draft, its sink, its shared budget.

    Messages are handled one at a time, so a ``subscribe`` followed by an ``unsubscribe`` of the
    same draft are answered in that order. ``send`` frames a message into the sink (raises
    :class:`~server.subscriber.SinkClosed` once the socket is closing). Extensions
    (:mod:`server.mux_hooks`) use ``send``, ``tasks.spawn`` (tasks owned by the socket), ``sink``
    and ``budget`` (to write through a :class:`~server.subscriber.Subscriber` of their own),
    ``closer`` and ``extras``.
    """

    def __init__(
        self, st: AppState, ws: web.WebSocketResponse, sink: TransportSink, closer: Closer, user_id: str
    ) -> None:
        self.st = st
        self.ws = ws
        self.sink = sink
        self.closer = closer
        self.user_id = user_id
        self.tasks = SocketTasks(st.sockets)
        self.budget = BacklogBudget(st.settings.ws_queue_bytes, st.settings.ws_queue_size)
        self.subscriptions: dict[str, MuxSubscription] = {}
        self.extras: dict[str, Any] = {}
        """Per-socket state of extensions (the feed's ``subscribe_me``, say), by their own key."""
        self.handlers: dict[str, MessageHandler] = {
            **st.mux.handlers,
            "subscribe": MuxSession.subscribe,
            "unsubscribe": MuxSession.unsubscribe,
            "ping": MuxSession.ping,
        }

    # -- the socket's life ----------------------------------------------------------------------

    async def run(self, expires_at: float | None) -> None:
        """``connected``, then messages until the socket closes; then every subscription ends."""
        st = self.st
        st.sockets.add(self.user_id, self.ws, self.closer.close)
        st.metrics.open_sockets.inc()
        try:
            self.send({"type": "connected", "user_id": self.user_id, "ts": utc_now_iso()})
            if expires_at is not None:
                self.tasks.spawn(expire(self.closer, expires_at))
            if self.closer.start_reading():  # see Closer.start_reading
                try:
                    await self._read_loop()
                except asyncio.CancelledError:
                    if not self.closer.absorbs_cancel():
                        raise
                finally:
                    self.closer.stop_reading()
        except (ConnectionError, RuntimeError):
            pass
        finally:
            # the decision to close is final: stop delivery before anything else is sent
            self.sink.start_closing()
            for sub in tuple(self.subscriptions.values()):
                self.end(sub, "socket_closed")
            for on_close in st.mux.on_close:
                try:
                    on_close(self)
                except Exception:
                    log.exception("/v1/ws on_close hook failed")
            self.tasks.cancel_all()
            try:
                await self.closer.send_close()
            finally:
                st.sockets.remove(self.user_id, self.ws)
                st.metrics.open_sockets.dec()
                self.closer.finish()

    async def _read_loop(self) -> None:
        flood = FloodGate(self.st.settings.ws_flood_limit)
        while True:
            msg = (
                await self.ws.receive()
            )  # not ``async for``: its __anext__ frame would live as long as the socket
            if msg.type in SOCKET_ENDED:
                return
            if flood.exceeded():
                flood.close(self.closer)
                return
            if msg.type == WSMsgType.TEXT:
                await self._dispatch(msg.data)
            elif msg.type == WSMsgType.BINARY:
                self.send_error("bad_message", "binary frames are not accepted; send JSON text")
            elif msg.type == WSMsgType.ERROR:
                return
            if self.sink.buffered > HIGH_WATER:
                # answers are not queued without bound for a peer that sends but does not read:
                # its next message is read once the transport has drained (TCP pushes back)
                await self.sink.writable()

    async def _dispatch(self, text: str) -> None:
        try:
            message = parse_message(text)
            handler = self.handlers.get(message["type"])
            if handler is None:
                known = ", ".join(sorted(self.handlers))
                raise BadMessage("bad_message", f"unknown message type; this socket accepts: {known}")
            await handler(self, message)
        except BadMessage as bad:
            self.send(bad.to_message())
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("/v1/ws message failed")
            self.send_error("internal_error", "internal error")

    # -- writing ----------------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """Frame ``message`` into the socket's sink, after everything written before it."""
        self.sink.write(text_frame(orjson.dumps(message)))

    def send_error(self, code: str, message: str, draft_id: str | None = None, **extra: Any) -> None:
        """``{"type": "error", "code", "message", "draft_id"?}``."""
        out: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if draft_id is not None:
            out["draft_id"] = draft_id
        out.update(extra)
        self.send(out)

    # -- messages -------------------------------------------------------------------------------

    async def ping(self, message: dict[str, Any]) -> None:
        """``ping`` → ``pong`` (API.md "WebSocket" item 4)."""
        self.send({"type": "pong", "ts": utc_now_iso()})

    async def subscribe(self, message: dict[str, Any]) -> None:
        """``subscribe`` → ``subscribed`` then the draft's events, or a refusal naming the draft.

        A refused subscribe changes nothing: an existing subscription to the draft goes on.
        An accepted one to a draft already subscribed ends the old one first (no event of it
        follows ``subscribed``) and restarts from the new ``since``.
        """
        request = parse_subscribe(message)
        draft_id = request.draft_id
        cap = self.st.settings.max_subscriptions_per_socket
        if draft_id not in self.subscriptions and len(self.subscriptions) >= cap:
            self.send_error("too_many_subscriptions", f"at most {cap} subscriptions per socket", draft_id)
            return
        try:
            admitted = await admit_draft(self.st, self.user_id, draft_id, request.since)
        except Exception as exc:
            self._refuse(draft_id, exc)
            return
        if self.closer.code is not None:
            return
        old = self.subscriptions.get(draft_id)
        if old is not None:
            self.end(old, "resubscribed")
        sub = MuxSubscription(draft_id, admitted.since, admitted.head_seq, SocketTasks(self.st.sockets))
        self.subscriptions[draft_id] = sub
        self.st.metrics.subscriptions.inc()
        self.send({"type": "subscribed", "draft_id": draft_id, "head_seq": admitted.head_seq})
        try:
            for hook in self.st.mux.before_events:
                await hook(self, sub)
                if sub.ended or self.closer.code is not None:
                    return
        except (ConnectionError, asyncio.CancelledError):
            self.end(sub, "failed")
            raise
        except Exception:
            log.exception("/v1/ws before_events hook failed")
            self.end(sub, "failed")  # no subscription is left half made (subscribed, no events)
            self.send_error("internal_error", "internal error", draft_id)
            return
        sub.subscriber = self.st.hub.subscribe(
            draft_id,
            self.sink,
            admitted.since,
            spawn=sub.tasks.spawn,
            request_close=lambda code, reason: self._subscription_closed(sub, code, reason),
            access=admitted.access,
            budget=self.budget,
        )

    async def unsubscribe(self, message: dict[str, Any]) -> None:
        """``unsubscribe`` → ``unsubscribed``; idempotent (a draft not subscribed is answered too)."""
        draft_id = draft_id_of(message)
        sub = self.subscriptions.get(draft_id)
        if sub is not None:
            self.end(sub, "unsubscribed")
        self.send({"type": "unsubscribed", "draft_id": draft_id})

    # -- ending subscriptions -------------------------------------------------------------------

    def end(self, sub: MuxSubscription, reason: str) -> None:
        """Stop ``sub`` for good: its subscriber writes nothing more, its tasks are cancelled."""
        if sub.ended:
            return
        sub.ended = True
        if self.subscriptions.get(sub.draft_id) is sub:
            del self.subscriptions[sub.draft_id]
        if sub.subscriber is not None:
            self.st.hub.unsubscribe(sub.subscriber)
        sub.tasks.cancel_all()
        self.st.metrics.subscriptions.dec()
        for hook in self.st.mux.on_end:
            try:
                hook(self, sub, reason)
            except Exception:
                log.exception("/v1/ws on_end hook failed")

    def _subscription_closed(self, sub: MuxSubscription, code: int, reason: bytes) -> None:
        """A subscriber's close request: revocation ends its subscription; anything else the socket."""
        if code != CLOSE_ACCESS_REVOKED:
            if code == CLOSE_TRY_AGAIN_LATER:
                self.st.metrics.slow_closes.inc()
            self.closer.request(code, reason)
            return
        if sub.ended:
            return
        self.end(sub, "revoked")
        with contextlib.suppress(ConnectionError):
            self.send_error(
                "access_revoked",
                "you no longer have access to this draft; do not resubscribe",
                sub.draft_id,
            )

    def _refuse(self, draft_id: str, exc: BaseException) -> None:
        """Answer a refused subscription as REST maps the error (``retry_after`` for 503s)."""
        api = to_api_error(exc)
        if api is None:
            log.error("/v1/ws subscribe failed: unexpected error", exc_info=exc)
            api = ApiError(500, "internal_error", "internal error")
        elif api.status >= 500:
            log.warning("/v1/ws subscribe refused: %r", exc)
        extra: dict[str, Any] = {}
        retry_after = api.headers.get("Retry-After")
        if retry_after is not None and retry_after.isdigit():
            extra["retry_after"] = int(retry_after)
        self.send_error(api.code, api.message, draft_id, **extra)
