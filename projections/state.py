"""Draft state as frozen values (API.md, "Draft state"). orjson serialises them directly.

Three numbers, three meanings (the one place that says so; docs/API.md points here):

* an event's **seq** — its place in its draft's log: 1, 2, 3… with no gaps (``DraftState.seq``
  is the last one folded in);
* an event's **position** (``Record.position``, ``read_all(after_position)``, the projector's
  checkpoint) — its place in the *global* log, across all drafts, increasing;
* a segment's **id** (``Segment.id``) — the global *position* of the ``collab.segment_added``
  event that added it (the store writes it there at append, so a rebuild reproduces it), and a
  segment's **position** (``Segment.position``) — its place among the draft's segments: 1, 2, 3….

The wire names ``id`` and ``position`` of a segment are fixed by the contract; in code a
segment's place is always spelled ``segment.position`` (or ``place_in_draft``) and a global
position always ``record.position`` / ``log_position``, never one for the other.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

Role = Literal["creator", "contributor", "viewer"]


@dataclass(frozen=True, slots=True)
class Segment:
    """One appended piece of text.

    ``id``: the global log position of the ``collab.segment_added`` event that added it (unique
    across the store); ``position``: its place in the draft, 1-based (see the module docstring).
    """

    id: int
    author_user_id: str
    content: str
    position: int
    created_at: str

    @property
    def log_position(self) -> int:
        """The global position of the event that added this segment (the same number as ``id``)."""
        return self.id

    @property
    def place_in_draft(self) -> int:
        """This segment's place among the draft's segments, 1-based (the same as ``position``)."""
        return self.position


@dataclass(frozen=True, slots=True)
class Collaborator:
    """A user invited to the draft (the creator is not listed here)."""

    user_id: str
    role: Literal["contributor", "viewer"]
    joined_at: str


@dataclass(frozen=True, slots=True)
class RingState:
    """Who holds the ring, and everyone who held it, in order."""

    current_holder_id: str
    holders_history: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DraftState:
    """The fold of a draft's events 1..``seq``."""

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
    archived: bool = False
    """API.md v2: set by ``collab.draft_archived``, cleared by ``collab.draft_unarchived``; a log
    written before those events existed folds to False."""

    def role_of(self, user_id: str) -> Role | None:
        """The user's role, or None for a stranger."""
        if user_id == self.creator_id:
            return "creator"
        for c in self.collaborators:
            if c.user_id == user_id:
                return c.role
        return None

    def can_view(self, user_id: str) -> bool:
        """Creator, contributors and viewers may read the draft."""
        return self.role_of(user_id) is not None

    def members(self) -> frozenset[str]:
        """Everyone who may view the draft."""
        return frozenset([self.creator_id, *(c.user_id for c in self.collaborators)])

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form served to clients."""
        result: dict[str, Any] = orjson.loads(self.to_json())
        return result

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys): equal states give equal bytes."""
        # every dict below is written in sorted key order, so no sort option is needed (orjson
        # keeps insertion order): a third less time for a long draft than sorting them (issue 16).
        # orjson would write dataclass fields in declaration order, and it is slower on them
        # than on dicts, so the state is spelled out as dicts
        return orjson.dumps(self._head() | {"segments": _segment_dicts(self.segments)} | self._tail())

    def json_pieces(self, segments_per_piece: int) -> Iterator[bytes]:
        """:meth:`to_json`'s bytes in pieces, joined exactly ``to_json()``; no piece encodes more
        than ``segments_per_piece`` (≥ 1) segments.

        For a caller on the event loop: encoding a 100,000-segment draft is ~50 ms of CPU held in
        one call (more with the collector), which stalls every socket; between two pieces it can
        yield. Each piece's segment dicts are freed before the next one is built.
        """
        if segments_per_piece < 1:
            raise ValueError("segments_per_piece must be >= 1")
        head = orjson.dumps(self._head())
        yield head[:-1] + b',"segments":['
        segments = self.segments
        for start in range(0, len(segments), segments_per_piece):
            if start:
                yield b","
            yield orjson.dumps(_segment_dicts(segments[start : start + segments_per_piece]))[1:-1]
        yield b"]," + orjson.dumps(self._tail())[1:]

    def _head(self) -> dict[str, Any]:
        """The fields sorted before ``segments``, as JSON-ready dicts in sorted key order."""
        ring = self.ring_state
        return _head_of(self, ring.current_holder_id, ring.holders_history)

    def _tail(self) -> dict[str, Any]:
        """The fields sorted after ``segments``."""
        return _tail_of(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> DraftState:
        """Inverse of :meth:`to_json`."""
        d = orjson.loads(raw)
        return cls(
            id=d["id"],
            title=d["title"],
            description=d["description"],
            creator_id=d["creator_id"],
            collaborators=tuple(Collaborator(**c) for c in d["collaborators"]),
            segments=tuple(Segment(**s) for s in d["segments"]),
            ring_state=RingState(
                d["ring_state"]["current_holder_id"], tuple(d["ring_state"]["holders_history"])
            ),
            seq=d["seq"],
            created_at=d["created_at"],
            updated_at=d["updated_at"],
            archived=d.get("archived", False),  # snapshots saved before API.md v2 lack it
        )

    def summary(self) -> DraftSummary:
        """What the draft list shows, plus who may see it."""
        return DraftSummary(self.id, self.title, self.seq, self.updated_at, self.members(), self.archived)


@dataclass(frozen=True, slots=True)
class DraftSummary:
    """One row of ``GET /v1/collab/drafts``, with the members who may see it."""

    id: str
    title: str
    seq: int
    updated_at: str
    members: frozenset[str]
    archived: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The list row served to clients (API.md's four fields; which list a row is in says
        whether it is archived: ``?archived=true``)."""
        return {"id": self.id, "title": self.title, "seq": self.seq, "updated_at": self.updated_at}


def _segment_dicts(segments: tuple[Segment, ...]) -> list[dict[str, Any]]:
    """Segments as JSON-ready dicts, keys in sorted order (see :meth:`DraftState.to_json`)."""
    return [
        {
            "author_user_id": s.author_user_id,
            "content": s.content,
            "created_at": s.created_at,
            "id": s.id,
            "position": s.position,
        }
        for s in segments
    ]


class StateFields(Protocol):
    """A draft state's fields that :func:`state_json` writes besides its segments and ring."""

    @property
    def id(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def creator_id(self) -> str: ...
    @property
    def collaborators(self) -> Sequence[Collaborator]: ...
    @property
    def seq(self) -> int: ...
    @property
    def created_at(self) -> str: ...
    @property
    def updated_at(self) -> str: ...
    @property
    def archived(self) -> bool: ...


def state_json(
    state: StateFields, segments: list[dict[str, Any]], holder: str, history: Sequence[str]
) -> bytes:
    """:meth:`DraftState.to_json`'s bytes for ``state`` whose ``segments`` are already the dicts it
    writes (keys in sorted order: ``author_user_id``, ``content``, ``created_at``, ``id``,
    ``position``), its ring being ``holder`` and ``history``.

    For a rebuild's :class:`~projections.fold.SnapshotFolder`, which keeps segments as those
    dicts; the layout is spelled once, in :func:`_head_of` and :func:`_tail_of`.
    """
    return orjson.dumps(_head_of(state, holder, history) | {"segments": segments} | _tail_of(state))


def _head_of(state: StateFields, holder: str, history: Sequence[str]) -> dict[str, Any]:
    """The fields sorted before ``segments``, as JSON-ready dicts in sorted key order."""
    return {
        "archived": state.archived,
        "collaborators": [
            {"joined_at": c.joined_at, "role": c.role, "user_id": c.user_id} for c in state.collaborators
        ],
        "created_at": state.created_at,
        "creator_id": state.creator_id,
        "description": state.description,
        "id": state.id,
        "ring_state": {"current_holder_id": holder, "holders_history": history},
    }


def _tail_of(state: StateFields) -> dict[str, Any]:
    """The fields sorted after ``segments``."""
    return {"seq": state.seq, "title": state.title, "updated_at": state.updated_at}
