"""Presence on the wire: its messages, its fan-out to a draft's sockets, and a socket's updates.

API.md v2 "Presence (ephemeral: never in the log)"; the registry itself is
:mod:`server.presence` (no I/O). Here:

* :func:`members_json` / :func:`sync_frame` / :func:`event_frame` — the JSON of ``GET
  …/presence``'s ``data``, of ``presence_sync`` and of ``presence`` messages. States are kept as
  their JSON bytes and spliced in, never parsed again. Times are ISO 8601 with milliseconds and
  ``Z``, as every ``ts`` of the API. A ``leave`` carries ``"state": null``.
* :class:`PresenceFanout` — the registry's observer: frames each change once and offers the
  same bytes to every subscriber of the draft through the hub (:meth:`server.hub.Hub.offer_message`),
  so presence rides the subscriber's byte-bounded sink and backlog like events (never an
  unbounded queue, never an ``await`` per socket). Every subscriber of the draft receives it,
  the sender's own sockets included: an ``update`` echoes to its sender (an acknowledgement).
  A socket's own ``join`` is not sent to it: it sees itself in its ``presence_sync``.
* :class:`PresenceInput` — one socket's ``{"type": "presence", "state"}`` messages: checked
  (docs/API.md: ``bad_message``, ``payload_too_large``), rate-limited per socket
  (``--presence-rate``, bursts to twice the rate), and **coalesced** beyond the rate: the latest
  state waits for the next token and the intermediate ones are dropped (presence is a "now"
  value: the kindest answer to a fast typist is their newest state, a moment later).

Ordering with the log (API.md: "before any event"): a socket writes ``presence_sync`` to its sink
right after ``connected`` and *before* it subscribes to the hub, with no ``await`` between
attaching, the sync and subscribing; every presence message and event then follows through the
subscriber. The ``/v1/ws`` socket does the same after ``subscribed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from server.frames import text_frame
from server.presence import (
    InvalidPresenceState,
    PresenceEvent,
    PresenceMember,
    PresenceRegistry,
    encode_state,
)
from server.ratelimit import RateLimiter

if TYPE_CHECKING:
    from server.hub import Hub

log = logging.getLogger(__name__)


def iso(ts: float) -> str:
    """Unix seconds as UTC ISO 8601 with milliseconds and ``Z`` (API.md "Events", ``ts``)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _quoted(text: str) -> bytes:
    return orjson.dumps(text)


def members_json(members: Sequence[PresenceMember]) -> bytes:
    """``[{"user_id", "state", "since"}, …]`` as JSON bytes."""
    parts = [
        b'{"user_id":'
        + _quoted(m.user_id)
        + b',"state":'
        + m.state_json
        + b',"since":'
        + _quoted(iso(m.since))
        + b"}"
        for m in members
    ]
    return b"[" + b",".join(parts) + b"]"


def sync_frame(registry: PresenceRegistry, draft_id: str) -> bytes:
    """The text frame of ``{"type": "presence_sync", "draft_id", "members"}`` for ``draft_id`` now."""
    body = (
        b'{"type":"presence_sync","draft_id":'
        + _quoted(draft_id)
        + b',"members":'
        + members_json(registry.members(draft_id))
        + b"}"
    )
    return text_frame(body)


def event_json(event: PresenceEvent) -> bytes:
    """``{"type": "presence", "draft_id", "event", "user_id", "state", "ts"}`` as JSON bytes."""
    return (
        b'{"type":"presence","draft_id":'
        + _quoted(event.draft_id)
        + b',"event":"'
        + event.kind.encode()
        + b'","user_id":'
        + _quoted(event.user_id)
        + b',"state":'
        + (event.state_json if event.state_json is not None else b"null")
        + b',"ts":'
        + _quoted(iso(event.ts))
        + b"}"
    )


def event_frame(event: PresenceEvent) -> bytes:
    """The text frame of a ``presence`` message (:func:`event_json`)."""
    return text_frame(event_json(event))


class PresenceFanout:
    """The registry observer that sends each change to the draft's subscribers (this node's).

    Register with ``registry.add_observer(fanout.on_change)``; ``on_message`` (optional) counts
    messages sent for the metrics.
    """

    def __init__(self, hub: Hub, on_message: Callable[[int], None] | None = None) -> None:
        self.hub = hub
        self.on_message = on_message

    def on_change(self, event: PresenceEvent) -> None:
        """Frame ``event`` once and offer it to every subscriber of its draft."""
        sent = self.hub.offer_message(event.draft_id, event_frame(event))
        if self.on_message is not None and sent:
            self.on_message(sent)


def error_message(code: str, message: str, **fields: Any) -> bytes:
    """An ``{"type": "error", "code", "message", …}`` message as JSON bytes."""
    return orjson.dumps({"type": "error", "code": code, "message": message, **fields})


class PresenceInput:
    """One socket's presence updates for one draft (see the module docstring).

    ``rate``: updates per second (bursts to ``2 * rate``; 0 = no limit). ``on_coalesced()`` is
    called for each update replaced by a newer one before it was applied. :meth:`close` cancels
    the pending timer (the socket's subscription ended); a pending state is then dropped.
    """

    __slots__ = (
        "_closed",
        "_limiter",
        "_on_coalesced",
        "_pending",
        "_rate",
        "_timer",
        "draft_id",
        "registry",
        "socket_key",
        "user_id",
    )

    def __init__(
        self,
        registry: PresenceRegistry,
        draft_id: str,
        user_id: str,
        socket_key: Hashable,
        *,
        rate: float,
        on_coalesced: Callable[[], None] | None = None,
    ) -> None:
        self.registry = registry
        self.draft_id = draft_id
        self.user_id = user_id
        self.socket_key = socket_key
        self._rate = rate
        self._limiter: RateLimiter | None = None  # made by the first update: most sockets send none
        self._pending: dict[str, Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._on_coalesced = on_coalesced
        self._closed = False

    def receive(self, message: dict[str, Any]) -> bytes | None:
        """Handle a parsed ``presence`` message; the ``error`` message to answer, or None.

        Refusals (the socket stays open, nothing changes): a ``draft_id`` other than this
        socket's draft, a missing or non-object ``state`` (``bad_message``), a state over 512
        bytes as JSON (``payload_too_large``).
        """
        draft_id = message.get("draft_id", self.draft_id)
        if draft_id != self.draft_id:
            return error_message(
                "bad_message", "draft_id must be this socket's draft (or left out)", draft_id=self.draft_id
            )
        state = message.get("state")
        try:
            encode_state(state)
        except InvalidPresenceState as e:
            return error_message(e.code, e.message, draft_id=self.draft_id)
        assert isinstance(state, dict)  # encode_state checked it
        if self._closed:
            return None
        if self._pending is not None:
            self._pending = state  # a timer is due: it will apply the newest state
            if self._on_coalesced is not None:
                self._on_coalesced()
            return None
        wait = self._allow()
        if wait <= 0:
            self._apply(state)
        else:
            self._pending = state
            self._timer = asyncio.get_running_loop().call_later(wait, self._flush)
        return None

    def _allow(self) -> float:
        """Take a token of this socket's bucket (:meth:`RateLimiter.allow`): 0, or the wait."""
        limiter = self._limiter
        if limiter is None:  # a bucket starts full when first asked, so making it now changes nothing
            limiter = self._limiter = RateLimiter(self._rate, 2 * self._rate)
        return limiter.allow("")

    def close(self) -> None:
        """Stop: cancel the pending update's timer, if any."""
        self._closed = True
        self._pending = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _flush(self) -> None:
        self._timer = None
        state, self._pending = self._pending, None
        if state is None or self._closed:
            return
        wait = self._allow()
        if wait > 0:  # the clock's granularity: try again when the token is surely there
            self._pending = state
            self._timer = asyncio.get_running_loop().call_later(wait, self._flush)
            return
        self._apply(state)

    def _apply(self, state: dict[str, Any]) -> None:
        with contextlib.suppress(KeyError):  # detached meanwhile (the socket is closing)
            self.registry.set_state(self.draft_id, self.user_id, self.socket_key, state)
