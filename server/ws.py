"""``/v1/ws/drafts/{id}?since=N``: the read-only event stream (API.md, "WebSocket").

The handler has two phases. **Admission** (this module) decides whether the socket may stream:
the server-wide switches and the Origin before the upgrade (refused as HTTP errors, see
:func:`upgrade`), then, on the upgraded socket, authentication, draft access, ``since`` and the
per-user socket cap. Every refusal is an exception mapped by :func:`server.errors.to_api_error`,
the same mapping as REST, and then by one table from the error's code to a close code
(:data:`CLOSE_CODE_OF`). **Streaming** (:mod:`server.ws_stream`) runs the admitted socket:
catch-up then live, pings, the flood limit and every server-side close.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from projections.access import ViewAccess
from projections.errors import Forbidden, NotFound
from server.errors import ApiError, to_api_error
from server.front import answer_failure
from server.origins import origin_allowed
from server.params import MAX_SEQ, ParameterError, parse_int
from server.service import is_draft_id
from server.state import AppState
from server.subscriber import DeliverySocket
from server.ws_stream import (
    CLOSE_ACCESS_REVOKED,
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_SINCE,
    CLOSE_NOT_FOUND,
    CLOSE_POLICY,
    CLOSE_TIMEOUT,
    CLOSE_TRY_AGAIN_LATER,
    Admission,
    stream_events,
)

log = logging.getLogger(__name__)

MAX_CLIENT_MESSAGE = 4096
"""Bytes in one client message (API.md v2: "at most 4 KiB"): pings and presence updates (a state
is at most 512 bytes); a socket that sends more is closed with 1009 (RFC 6455 §7.4.1 "Message Too
Big")."""

WS_MAX_MSG_SIZE = MAX_CLIENT_MESSAGE + 1
"""aiohttp's ``max_msg_size`` for both sockets: aiohttp refuses a message whose length reaches its
limit (``>=``), so the limit is one above the largest message the contract allows."""

CLOSE_CODE_OF: dict[str, int] = {
    "unauthorized": CLOSE_POLICY,
    "forbidden": CLOSE_POLICY,
    "too_many_sockets": CLOSE_POLICY,
    "not_found": CLOSE_NOT_FOUND,
    "invalid_since": CLOSE_INVALID_SINCE,
    "invalid_parameter": CLOSE_INVALID_SINCE,
    "validation_error": CLOSE_INVALID_SINCE,
    "access_revoked": CLOSE_ACCESS_REVOKED,
    "unavailable": CLOSE_TRY_AGAIN_LATER,
    "internal_error": CLOSE_INTERNAL_ERROR,
}
"""Refusal code (API.md's error codes) → WebSocket close code (API.md "WebSocket" item 1;
1008 "Policy Violation", 1011 "Internal Error", 1013 "Try Again Later" are RFC 6455 §7.4.1)."""


async def draft_socket(request: web.Request) -> web.StreamResponse:
    """Admit the socket (or refuse it with the mapped close code), then stream the draft's events."""
    st: AppState = request.app[AppState.KEY]
    ws = socket_response(st)
    refused = await upgrade(request, st, ws)
    if refused is not None:
        return refused
    try:
        admission = await admit(request, st)
    except Exception as exc:
        await refuse(ws, exc)
        return ws
    try:
        await stream_events(request, ws, st, admission)
    except Exception as exc:  # a bug: logged and answered as the front middleware answers any handler's
        return answer_failure(request, exc, st.settings.allowed_origins)
    return ws


def socket_response(st: AppState) -> web.WebSocketResponse:
    """The response both sockets upgrade with (``/v1/ws/drafts/{id}`` and ``/v1/ws``): a
    :class:`~server.subscriber.DeliverySocket`, so the fan-out's lane may write to it directly."""
    return DeliverySocket(
        heartbeat=st.settings.ws_ping_interval,
        compress=False,  # the fan-out writes one pre-framed copy of each event to every socket
        max_msg_size=WS_MAX_MSG_SIZE,
        timeout=CLOSE_TIMEOUT,
        autoclose=False,  # a peer's Close is answered by the socket's handler, after it stops delivering
    )


async def upgrade(request: web.Request, st: AppState, ws: web.WebSocketResponse) -> web.StreamResponse | None:
    """The checks before the upgrade (:func:`admit_upgrade`) and the handshake; None once ``ws``
    is upgraded, else the HTTP answer to return instead (never a 101 then).

    The socket routes are not wrapped by the front middleware (:mod:`server.front`: no frame of
    it lives as long as a socket), so their refusals before the upgrade — ours (403, 503) and
    aiohttp's handshake errors (400, 405) — are answered here, as that middleware answers any
    handler's: the contract's JSON error body, with CORS headers for an allowed origin.
    """
    try:
        admit_upgrade(request, st)
        await ws.prepare(request)
    except web.HTTPBadRequest:  # aiohttp's own words would echo the client's headers
        return answer_failure(
            request, ApiError(400, "bad_request", NOT_A_HANDSHAKE), st.settings.allowed_origins
        )
    except Exception as exc:
        return answer_failure(request, exc, st.settings.allowed_origins)
    return None


NOT_A_HANDSHAKE = (
    "this route takes a WebSocket opening handshake (RFC 6455 §4.1): GET with Upgrade: websocket, "
    "Connection: Upgrade, a Sec-WebSocket-Key of 16 bytes in base64 and Sec-WebSocket-Version: 13"
)
"""The message of the 400 for a request on a socket route that is not a valid opening handshake."""


def check_socket_cap(st: AppState, user_id: str) -> None:
    """Refuse a socket over ``--max-sockets-per-user`` (429 ``too_many_sockets``): this process's
    sockets and the other processes' last reports (:mod:`server.peerlimits`), one dictionary
    look-up each, whatever the number of processes."""
    cap = st.settings.max_sockets_per_user
    if cap and st.peer_limits.sockets.total(user_id) >= cap:
        raise ApiError(429, "too_many_sockets", f"at most {cap} sockets per user")


def admit_upgrade(request: web.Request, st: AppState) -> None:
    """Checks that need no credentials, answered before the upgrade (HTTP 403 / 503)."""
    settings = st.settings
    if not settings.ws_enabled:
        raise ApiError(503, "unavailable", "WebSockets are switched off on this server; poll /events")
    origin = request.headers.get("Origin")
    if (
        settings.allowed_origins
        and origin is not None
        and not origin_allowed(settings.allowed_origins, origin, request.host)
    ):
        raise ApiError(403, "forbidden", "this Origin is not allowed")
    if st.sockets.closing:
        raise ApiError(503, "unavailable", "server is shutting down", headers={"Retry-After": "1"})


async def admit(request: web.Request, st: AppState) -> Admission:
    """Authenticate, check access to the draft, validate ``since``, check the socket cap.

    Raises ``ApiError`` (401 ``unauthorized``, 400 ``invalid_since``, 429 ``too_many_sockets``),
    ``NotFound``, ``Forbidden``, or a store error (mapped to ``unavailable``).
    """
    identity = await st.auth.identify(request.headers, request.query, websocket=True)
    user_id = identity.user_id
    raw_since = request.query.get("since")
    since = None if raw_since is None else _parse_since(raw_since)
    draft = await admit_draft(st, user_id, request.match_info["draft_id"], since)
    check_socket_cap(st, user_id)
    return Admission(draft.draft_id, user_id, draft.since, draft.head_seq, identity.expires_at, draft.access)


@dataclass(frozen=True, slots=True)
class DraftAdmission:
    """A user allowed to follow a draft from ``since``; ``head_seq`` as admitted; their access."""

    draft_id: str
    since: int
    head_seq: int
    access: ViewAccess


async def admit_draft(st: AppState, user_id: str, draft_id: str, since: int | None) -> DraftAdmission:
    """May ``user_id`` follow ``draft_id`` from ``since`` (None: from the head)? The per-draft
    socket's rules (API.md "WebSocket" item 1), shared by ``/v1/ws`` subscriptions.

    ``since`` must be from 0 to the head (a negative value stands for "not an integer").
    Raises ``NotFound`` (also for an id not of the server's form, never sent to the store),
    ``Forbidden``, ``ApiError(400, "invalid_since")`` or a store error (mapped to ``unavailable``).
    """
    if not is_draft_id(draft_id):  # never sent to the store (issue 10, item 6)
        raise NotFound("draft not found")
    state = await st.projector.get(draft_id)
    if state is None:
        raise NotFound("draft not found")
    if not state.can_view(user_id):
        raise Forbidden("you are not a collaborator on this draft")
    head = state.seq
    if since is None:
        since = head
    else:
        if since > head:
            # the projection follows commits a moment after they are readable, and a client may
            # have seen the newest events from the log in a catch-up: the log's head decides
            head = max(head, await st.store.head(draft_id))
        if not 0 <= since <= head:
            raise ApiError(400, "invalid_since", f"since must be an integer from 0 to {head}")
        if since > state.seq:
            # the access fold must start at or below since: no event it needs goes unseen
            newer = await st.projector.get(draft_id, since)
            if newer is None or not newer.can_view(user_id):
                raise Forbidden("you are not a collaborator on this draft")
            state = newer
    return DraftAdmission(draft_id, since, head, ViewAccess(state, user_id))


def _parse_since(raw: str) -> int:
    """``since`` from the query; -1 (refused by the range check) when it is not an integer."""
    try:
        return parse_int(raw, "since", 0, MAX_SEQ)
    except ParameterError:
        return -1


def refusal(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The close code and ``error`` message for an admission failure.

    The error is mapped as REST maps it (:func:`server.errors.to_api_error`); anything unmapped
    is an internal error (logged). A ``Retry-After`` the REST answer would carry becomes a
    ``retry_after`` field (seconds), so a client does not reconnect in a tight loop.
    """
    api = to_api_error(exc)
    if api is None:
        log.error("socket refused: unexpected error", exc_info=exc)
        api = ApiError(500, "internal_error", "internal error")
    elif api.status >= 500:
        log.warning("socket refused: %r", exc)
    message: dict[str, Any] = {"type": "error", "code": api.code, "message": api.message}
    retry_after = api.headers.get("Retry-After")
    if retry_after is not None and retry_after.isdigit():
        message["retry_after"] = int(retry_after)
    return CLOSE_CODE_OF.get(api.code, CLOSE_POLICY), message


async def refuse(ws: web.WebSocketResponse, exc: BaseException) -> None:
    """Send the refusal's ``error`` message, then close with its code; nothing else is written."""
    close_code, message = refusal(exc)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_frame(orjson.dumps(message), WSMsgType.TEXT)
    with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
        await ws.close(code=close_code, message=message["code"].encode())
