"""Typed views of what the server sends: events (API.md "Events") and draft state.

``fold`` applies an event to a :class:`DraftState` with the same rules as
``projections/fold.py``, so a client can keep state current from the stream alone.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


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


class Segment(BaseModel):
    """One appended piece of text."""

    model_config = ConfigDict(frozen=True)

    id: int
    author_user_id: str
    content: str
    position: int
    created_at: str


class Collaborator(BaseModel):
    """A user invited to the draft."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    role: Literal["contributor", "viewer"]
    joined_at: str


class RingState(BaseModel):
    """Who holds the ring, and who held it before."""

    model_config = ConfigDict(frozen=True)

    current_holder_id: str
    holders_history: tuple[str, ...]


class DraftState(BaseModel):
    """A draft as of ``seq`` (API.md "Draft state")."""

    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    description: str
    creator_id: str
    collaborators: tuple[Collaborator, ...]
    segments: tuple[Segment, ...]
    ring_state: RingState
    seq: int
    created_at: str
    updated_at: str


class DraftSummary(BaseModel):
    """A row of ``GET /v1/collab/drafts``."""

    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    seq: int
    updated_at: str


class FoldError(ValueError):
    """The event cannot follow the state (another draft, or not the next seq)."""


def fold(state: DraftState | None, event: Event) -> DraftState:
    """The state after ``event``: the server's fold rules, on the client's models."""
    d = event.data
    if event.type == "collab.draft_created":
        if state is not None:
            raise FoldError(f"draft {event.draft_id!r} was already created")
        creator = d["creator_id"]
        return DraftState(
            id=event.draft_id,
            title=d["title"],
            description=d.get("description", ""),
            creator_id=creator,
            collaborators=(),
            segments=(),
            ring_state=RingState(current_holder_id=creator, holders_history=(creator,)),
            seq=event.seq,
            created_at=event.ts,
            updated_at=event.ts,
        )
    if state is None or event.draft_id != state.id or event.seq != state.seq + 1:
        raise FoldError(f"event {event.draft_id}#{event.seq} cannot follow this state")
    changes: dict[str, Any] = {"seq": event.seq, "updated_at": event.ts}
    if event.type == "collab.segment_added":
        changes["segments"] = (*state.segments, Segment.model_validate(d["segment"]))
    elif event.type == "collab.ring_passed":
        changes["ring_state"] = RingState(
            current_holder_id=d["current_holder_id"], holders_history=tuple(d["holders_history"])
        )
    elif event.type == "collab.collaborator_added":
        collaborator = Collaborator(user_id=d["collaborator_id"], role=d["role"], joined_at=d["joined_at"])
        changes["collaborators"] = (*state.collaborators, collaborator)
    elif event.type == "collab.draft_updated":
        changes.update({k: d[k] for k in ("title", "description") if k in d})
    # unknown types (from a newer server) only advance seq, as on the server
    return state.model_copy(update=changes)
