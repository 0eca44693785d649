"""Presence on ``GET /v1/ws`` (API.md v2 "Presence"), plugged in through :mod:`server.mux_hooks`.

* ``before_events``: the subscription attaches to the registry (its :class:`MuxSubscription` is
  the socket key: one attachment per subscription) and writes ``presence_sync`` into the socket's
  sink, right after ``subscribed``; the hook never awaits, so nothing runs between the sync and
  the hub subscription that follows it: the sync precedes every event and presence message of
  the draft (:mod:`server.presence_wire`).
* ``{"type": "presence", "draft_id", "state"}``: ``draft_id`` is required here and must name a
  draft this socket subscribes to, else ``bad_message`` with the ``draft_id``; then the per-draft
  socket's rules (:class:`server.presence_wire.PresenceInput`: ``bad_message``,
  ``payload_too_large``, coalescing beyond ``--presence-rate``, per subscription).
* ``on_end``: the subscription detaches (``unsubscribed``, ``resubscribed``, ``socket_closed``,
  ``failed``) — a ``leave`` for the others when it was the user's last socket on the draft. On
  ``revoked`` the detach runs on the next loop turn, so that every other socket has the removal
  event before the ``leave`` (as on the per-draft socket); on ``resubscribed`` too, so that the
  new subscription is attached first and the others see no leave and join.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from server.frames import text_frame
from server.metrics import Metrics
from server.mux_hooks import MuxExtensions
from server.mux_messages import BadMessage
from server.presence import PresenceRegistry
from server.presence_wire import PresenceInput, sync_frame

if TYPE_CHECKING:
    from server.ws_mux import MuxSession, MuxSubscription

EXTRAS_KEY = "presence"
"""``MuxSession.extras[EXTRAS_KEY]``: draft id → that subscription's :class:`PresenceInput`."""


def register_presence(mux: MuxExtensions, registry: PresenceRegistry, rate: float, metrics: Metrics) -> None:
    """Add presence to ``/v1/ws``: the sync after ``subscribed``, ``presence`` messages, leaves."""

    def inputs(session: MuxSession) -> dict[str, PresenceInput]:
        found: dict[str, PresenceInput] = session.extras.setdefault(EXTRAS_KEY, {})
        return found

    async def before_events(session: MuxSession, sub: MuxSubscription) -> None:
        # no await in here: attach, sync and the hub subscription after us are one step
        registry.attach(sub.draft_id, session.user_id, sub)
        inputs(session)[sub.draft_id] = PresenceInput(
            registry,
            sub.draft_id,
            session.user_id,
            sub,
            rate=rate,
            on_coalesced=metrics.presence_coalesced.inc,
        )
        session.sink.write(sync_frame(registry, sub.draft_id))

    def on_end(session: MuxSession, sub: MuxSubscription, reason: str) -> None:
        current = inputs(session).get(sub.draft_id)
        if current is not None and current.socket_key is sub:
            current.close()
            del inputs(session)[sub.draft_id]

        def detach() -> None:
            registry.detach(sub.draft_id, session.user_id, sub)

        if reason in ("revoked", "resubscribed"):
            # revoked: the others get the removal event first; resubscribed: the new
            # subscription attaches first (in the same step), so the user never "leaves"
            asyncio.get_running_loop().call_soon(detach)
        else:
            detach()

    async def presence(session: MuxSession, message: dict[str, Any]) -> None:
        draft_id = message.get("draft_id")
        if not isinstance(draft_id, str):
            raise BadMessage("bad_message", "presence needs the draft_id of a subscribed draft")
        target = inputs(session).get(draft_id)
        if target is None or draft_id not in session.subscriptions:
            session.send_error("bad_message", "subscribe to this draft before setting presence", draft_id)
            return
        refusal = target.receive(message)
        if refusal is not None:
            session.sink.write(text_frame(refusal))

    mux.before_events.append(before_events)
    mux.on_end.append(on_end)
    mux.handlers["presence"] = presence
