"""Who may still view a draft, folded from the events a socket forwards (API.md v2 "Revocation is live").

A socket is admitted against the draft's state at some seq; from then on it forwards the log's
events. :class:`ViewAccess` folds only the access-relevant ones (``collab.collaborator_added`` /
``collab.collaborator_removed`` / ``collab.role_changed`` naming the socket's user) that come
*after* the seq it was admitted at, so it knows, at the exact seq, when its user loses view
access. Every node's hub sees every event of the draft, so this decision is the same on every
node and worker without any second channel. ``ViewAccess`` is a fast path of the fold:
``tests/projections/test_fold_properties.py`` holds it equal to
``fold_all(...).can_view(user_id)`` for every prefix of random logs.
"""

from __future__ import annotations

from typing import Any

import orjson

from projections.event_types import EventType
from projections.state import DraftState, Role

REMOVAL_MARKER = b'"' + EventType.COLLABORATOR_REMOVED.encode() + b'"'
"""Bytes every ``collab.collaborator_removed`` body contains: bodies without them cannot revoke."""


class ViewAccess:
    """One user's role on one draft, from the state at ``state.seq`` onwards.

    :meth:`observe` takes each forwarded event (any order of calls with increasing seq; events
    at or below the starting seq are already in the state and ignored) and returns True exactly
    when the user's view access ends at that event.
    """

    __slots__ = ("role", "seq", "user_id")

    def __init__(self, state: DraftState, user_id: str) -> None:
        self.user_id = user_id
        self.role: Role | None = state.role_of(user_id)
        self.seq = state.seq

    @property
    def can_view(self) -> bool:
        """True while the user is the creator or a collaborator."""
        return self.role is not None

    def observe(self, seq: int, type_: str, data: dict[str, Any]) -> bool:
        """Fold one event; True if it is the one that takes the user's view access away."""
        if seq <= self.seq:
            return False
        self.seq = seq
        if data.get("collaborator_id") != self.user_id:
            return False
        before = self.role
        if type_ == EventType.COLLABORATOR_ADDED:
            self.role = data["role"]
        elif type_ == EventType.COLLABORATOR_REMOVED:
            self.role = None
        elif type_ == EventType.ROLE_CHANGED:
            self.role = data["to_role"]
        return before is not None and self.role is None

    def observe_body(self, seq: int, body: bytes) -> bool:
        """:meth:`observe` of an event given as its JSON envelope (decoded only if it may revoke)."""
        if seq <= self.seq:
            return False
        if REMOVAL_MARKER not in body:
            self.seq = seq
            return False
        envelope = orjson.loads(body)
        return self.observe(seq, envelope["type"], envelope["data"])
