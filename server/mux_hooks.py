"""What features add to ``GET /v1/ws`` without editing its session (:mod:`server.ws_mux`).

Presence (API.md v2 "Presence": ``presence_sync`` right after ``subscribed`` and before any
event; ``leave`` when a subscription ends) and the caller's own feed (``subscribe_me``) plug in
here, on the app's :class:`MuxExtensions` (``AppState.mux``), built at app start:

* :attr:`MuxExtensions.handlers` — message ``type`` → handler, consulted after the socket's own
  (``subscribe``, ``unsubscribe``, ``ping``); a handler gets the session and the parsed object.
* :attr:`MuxExtensions.before_events` — awaited for every accepted subscription after its
  ``subscribed`` message is written and before the draft's first event can be (the subscription
  is not yet registered with the hub; its catch-up starts from ``since`` afterwards, so waiting
  here loses nothing).
* :attr:`MuxExtensions.on_end` — called (synchronously) when a subscription ends, with the
  reason: ``"unsubscribed"``, ``"resubscribed"``, ``"revoked"``, ``"socket_closed"`` or ``"failed"`` (a
  ``before_events`` hook raised; the client was answered ``internal_error`` with the ``draft_id``).
* :attr:`MuxExtensions.on_close` — called (synchronously) once the socket is closing, after its
  subscriptions have ended; nothing more can be written (release what ``extras`` holds).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.ws_mux import MuxSession, MuxSubscription

MessageHandler = Callable[["MuxSession", dict[str, Any]], Awaitable[None]]
"""Answers one client message (already a JSON object with a string ``type``)."""

BeforeEvents = Callable[["MuxSession", "MuxSubscription"], Awaitable[None]]
"""Runs between ``subscribed`` and the subscription's first event."""

OnEnd = Callable[["MuxSession", "MuxSubscription", str], None]
"""Runs when a subscription ends (no event of it follows), with the reason."""

OnClose = Callable[["MuxSession"], None]
"""Runs when the socket closes, after its subscriptions have ended."""


@dataclass
class MuxExtensions:
    """Hooks other features register on ``/v1/ws`` (see the module docstring)."""

    handlers: dict[str, MessageHandler] = field(default_factory=dict)
    before_events: list[BeforeEvents] = field(default_factory=list)
    on_end: list[OnEnd] = field(default_factory=list)
    on_close: list[OnClose] = field(default_factory=list)
