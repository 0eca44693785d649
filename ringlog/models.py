"""Typed views of what the server sends: events (API.md "Events") and draft state.

The draft state types and :func:`fold` are the server's own (``projections.state``,
``projections.fold``): one definition of the state and one fold, so a client folding the stream
gets exactly what the server serves. Replies are checked on the way in by
:func:`parse_draft_state` (pydantic validates the dataclasses' fields and types).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter

from projections.event_types import EventType
from projections.fold import FoldError, fold
from projections.state import Collaborator, DraftState, RingState, Segment

__all__ = [
    "Collaborator",
    "DraftState",
    "DraftSummary",
    "Event",
    "EventType",
    "FeedItem",
    "FoldError",
    "RingState",
    "Segment",
    "fold",
    "parse_collaborator",
    "parse_draft_state",
    "parse_ring_state",
    "parse_segment",
]


class Event(BaseModel):
    """One event envelope; fields by attribute (``e.seq``) or by key (``e["seq"]``)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    type: str
    draft_id: str
    seq: int
    ts: str
    user_id: str
    data: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        if key not in self.to_dict():
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.to_dict()

    def get(self, key: str, default: Any = None) -> Any:
        """``dict.get`` for the envelope's keys."""
        return self.to_dict().get(key, default)

    def keys(self) -> list[str]:
        """The envelope's keys."""
        return list(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The envelope as a plain dict (what the server sent)."""
        return self.model_dump()


class FeedItem(BaseModel):
    """One entry of the caller's own feed (API.md v2 "The caller's own feed"): the event's global
    ``position`` in the log (increasing; resume with ``after`` = the last one seen) and the
    ``event`` envelope, as ``GET /v1/me/events`` and ``me`` messages on ``/v1/ws`` carry them."""

    model_config = ConfigDict(frozen=True)

    position: int
    event: Event


class DraftSummary(BaseModel):
    """A row of ``GET /v1/collab/drafts``."""

    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    seq: int
    updated_at: str


_DRAFT_STATE = TypeAdapter(DraftState)
_SEGMENT = TypeAdapter(Segment)
_COLLABORATOR = TypeAdapter(Collaborator)
_RING_STATE = TypeAdapter(RingState)


def parse_draft_state(obj: Any) -> DraftState:
    """A :class:`DraftState` from the JSON the server sent (API.md "Draft state").

    Raises ``pydantic.ValidationError`` when a field is missing or of the wrong type; keys this
    version does not know (added by a newer server) are ignored.
    """
    return _DRAFT_STATE.validate_python(obj)


def parse_segment(obj: Any) -> Segment:
    """A :class:`Segment` from JSON; ``pydantic.ValidationError`` if it is not one."""
    return _SEGMENT.validate_python(obj)


def parse_collaborator(obj: Any) -> Collaborator:
    """A :class:`Collaborator` from JSON; ``pydantic.ValidationError`` if it is not one."""
    return _COLLABORATOR.validate_python(obj)


def parse_ring_state(obj: Any) -> RingState:
    """A :class:`RingState` from JSON; ``pydantic.ValidationError`` if it is not one."""
    return _RING_STATE.validate_python(obj)
