"""fold(state, event) -> state: one handler per event type, no I/O.

This is the only fold of a draft's events: the server's projector, the operator tools
(``ringlog replay/rebuild/drafts``) and the Python client (``ringlog.fold``) all use it. It takes
any event with the envelope's attributes (:class:`FoldableEvent`: the log's
``eventstore.Event`` and the client's ``ringlog.Event`` alike).

``fold_all`` folds many events through a mutable builder and freezes once, so rebuilding a
long draft is linear rather than quadratic; it gives exactly what repeated ``fold`` gives.
Two shortcuts exist for speed, each proven equal to the fold by a hypothesis property test
(tests/projections/test_fold_properties.py): :meth:`LogFolder.add_envelope` inlines
``collab.segment_added`` (the bulk of any log) for rebuilds, and :func:`fold_summary` keeps
only a draft's list row (``fold_summary(…) == fold_all(…).summary()``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

from projections.event_types import EventType
from projections.state import Collaborator, DraftState, DraftSummary, RingState, Segment, state_json


class FoldError(ValueError):
    """An event cannot follow the state it is folded into (wrong draft, seq or type)."""


UNFOLDABLE = (ValueError, KeyError, TypeError, AttributeError)
"""What decoding and folding a stored body that is not a foldable event raises: :class:`FoldError`
(it breaks the drafts' rules), ``orjson.JSONDecodeError`` and pydantic's ``ValidationError``
(both ``ValueError``: a body that is not an event), ``KeyError`` / ``TypeError`` /
``AttributeError`` (an envelope missing a field or holding the wrong kind of value, also deep in
``data``). Never a store's error: those are retried."""


class FoldableEvent(Protocol):
    """What the fold reads of an event: the envelope's fields (API.md "Events")."""

    @property
    def type(self) -> str: ...
    @property
    def draft_id(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def ts(self) -> str: ...
    @property
    def data(self) -> dict[str, Any]: ...


@dataclass(slots=True)
class _Builder:
    id: str
    title: str
    description: str
    creator_id: str
    collaborators: list[Collaborator]
    segments: list[Segment]
    holder: str
    history: list[str]
    seq: int
    created_at: str
    updated_at: str
    archived: bool = False

    @classmethod
    def thaw(cls, s: DraftState) -> _Builder:
        return cls(
            s.id,
            s.title,
            s.description,
            s.creator_id,
            list(s.collaborators),
            list(s.segments),
            s.ring_state.current_holder_id,
            list(s.ring_state.holders_history),
            s.seq,
            s.created_at,
            s.updated_at,
            s.archived,
        )

    def freeze(self) -> DraftState:
        return DraftState(
            id=self.id,
            title=self.title,
            description=self.description,
            creator_id=self.creator_id,
            collaborators=tuple(self.collaborators),
            segments=tuple(self.segments),
            ring_state=RingState(self.holder, tuple(self.history)),
            seq=self.seq,
            created_at=self.created_at,
            updated_at=self.updated_at,
            archived=self.archived,
        )


# Handlers take the event's ``data`` (and the envelope fields they need) rather than an Event,
# so that a rebuild can fold envelopes decoded straight from the log's bytes without building
# a model per event; folding an Event and folding its envelope are then the same code.


def _created(b: _Builder | None, draft_id: str, ts: str, d: dict[str, Any]) -> _Builder:
    if b is not None:
        raise FoldError(f"draft {draft_id!r} was already created")
    creator = d["creator_id"]
    return _Builder(
        draft_id, d["title"], d.get("description", ""), creator, [], [], creator, [creator], 0, ts, ts
    )


def _segment_added(b: _Builder, d: dict[str, Any]) -> None:
    s = d["segment"]
    b.segments.append(Segment(s["id"], s["author_user_id"], s["content"], s["position"], s["created_at"]))


def _ring_passed(b: _Builder, d: dict[str, Any]) -> None:
    b.holder = d["current_holder_id"]
    b.history = list(d["holders_history"])


def _collaborator_added(b: _Builder, d: dict[str, Any]) -> None:
    b.collaborators.append(Collaborator(d["collaborator_id"], d["role"], d["joined_at"]))


def _draft_updated(b: _Builder, d: dict[str, Any]) -> None:
    if "title" in d:
        b.title = d["title"]
    if "description" in d:
        b.description = d["description"]


def _collaborator_removed(b: _Builder, d: dict[str, Any]) -> None:
    gone = d["collaborator_id"]
    b.collaborators = [c for c in b.collaborators if c.user_id != gone]


def _role_changed(b: _Builder, d: dict[str, Any]) -> None:
    who, role = d["collaborator_id"], d["to_role"]
    b.collaborators = [
        Collaborator(c.user_id, role, c.joined_at) if c.user_id == who else c for c in b.collaborators
    ]


def _draft_archived(b: _Builder, d: dict[str, Any]) -> None:
    b.archived = True


def _draft_unarchived(b: _Builder, d: dict[str, Any]) -> None:
    b.archived = False


HANDLERS: dict[str, Callable[[_Builder, dict[str, Any]], None]] = {
    EventType.SEGMENT_ADDED: _segment_added,
    EventType.RING_PASSED: _ring_passed,
    EventType.COLLABORATOR_ADDED: _collaborator_added,
    EventType.DRAFT_UPDATED: _draft_updated,
    EventType.COLLABORATOR_REMOVED: _collaborator_removed,
    EventType.ROLE_CHANGED: _role_changed,
    EventType.DRAFT_ARCHIVED: _draft_archived,
    EventType.DRAFT_UNARCHIVED: _draft_unarchived,
}
"""One handler per event type but ``collab.draft_created`` (which starts a builder)."""


def _apply_fields(
    b: _Builder | None, type_: str, draft_id: str, seq: int, ts: str, data: dict[str, Any]
) -> _Builder:
    if type_ == EventType.DRAFT_CREATED:
        b = _created(b, draft_id, ts, data)
    elif b is None:
        raise FoldError(f"draft {draft_id!r}: first event must be {EventType.DRAFT_CREATED}, got {type_}")
    elif draft_id != b.id:
        raise FoldError(f"event of draft {draft_id!r} folded into draft {b.id!r}")
    else:
        handler = HANDLERS.get(type_)
        if handler is not None:  # unknown types (from a newer writer) only advance seq
            handler(b, data)
    if seq != b.seq + 1:
        raise FoldError(f"draft {b.id!r}: seq {seq} cannot follow seq {b.seq}")
    b.seq = seq
    b.updated_at = ts
    return b


def _apply(b: _Builder | None, e: FoldableEvent) -> _Builder:
    return _apply_fields(b, e.type, e.draft_id, e.seq, e.ts, e.data)


def fold_all(state: DraftState | None, events: Iterable[FoldableEvent]) -> DraftState | None:
    """Fold ``events`` (in seq order) into ``state``; None stays None for no events."""
    if state is not None and isinstance(events, (tuple, list)) and len(events) == 1:
        e = events[0]
        if e.type == EventType.SEGMENT_ADDED and e.seq == state.seq + 1 and e.draft_id == state.id:
            return _one_segment(state, e.ts, e.data)
    b = _Builder.thaw(state) if state is not None else None
    touched = False
    for e in events:
        b = _apply(b, e)
        touched = True
    if b is None:
        return None
    return b.freeze() if touched or state is None else state


def _one_segment(state: DraftState, ts: str, d: dict[str, Any]) -> DraftState:
    """``state`` after the ``collab.segment_added`` that follows it (what a live append folds).

    The same result as thawing a builder, appending and freezing (a property test in
    tests/projections/test_fold_properties.py holds them equal), without copying the
    segments into a list and back: one tuple concatenation instead, so an append to a long
    draft no longer costs two copies of its segments in Python objects' terms.
    """
    s = d["segment"]
    segment = Segment(s["id"], s["author_user_id"], s["content"], s["position"], s["created_at"])
    return DraftState(
        id=state.id,
        title=state.title,
        description=state.description,
        creator_id=state.creator_id,
        collaborators=state.collaborators,
        segments=(*state.segments, segment),
        ring_state=state.ring_state,
        seq=state.seq + 1,
        created_at=state.created_at,
        updated_at=ts,
        archived=state.archived,
    )


def fold(state: DraftState | None, event: FoldableEvent) -> DraftState:
    """The state after one more event; ``state`` is None before ``collab.draft_created``.

    Raises :class:`FoldError` when the event cannot follow ``state`` (another draft, not the
    next seq, a second ``collab.draft_created``, or a first event of another type). An event
    of a type this version does not know only advances ``seq`` and ``updated_at``.
    """
    result = fold_all(state, (event,))
    assert result is not None
    return result


def state_at(events: Iterable[FoldableEvent], until_seq: int | None = None) -> DraftState | None:
    """The draft's state as of ``until_seq`` (or its last event), from its log alone."""
    if until_seq is None:
        return fold_all(None, events)
    return fold_all(None, (e for e in events if e.seq <= until_seq))


def fold_log(events: Iterable[FoldableEvent]) -> dict[str, DraftState]:
    """Fold an interleaved log (position order) into every draft's state, in linear time."""
    folder = LogFolder()
    for e in events:
        folder.add(e.type, e.draft_id, e.seq, e.ts, e.data)
    return folder.states()


class LogFolder:
    """Folds an interleaved log, event by event, into every draft's state (for rebuilds).

    :meth:`add_envelope` takes envelopes as decoded from the log's bytes, so a rebuild folds
    without building an :class:`Event` per event; the result is exactly ``fold_log``'s.
    """

    def __init__(self) -> None:
        self._builders: dict[str, _Builder] = {}
        self.count = 0
        self.position = 0
        """The global position folded up to (set by whoever feeds the folder)."""

    def start_from(self, state: DraftState) -> None:
        """Continue ``state``'s draft from ``state`` (its later events follow; the state is not changed)."""
        self._builders[state.id] = _Builder.thaw(state)

    def add(self, type_: str, draft_id: str, seq: int, ts: str, data: dict[str, Any]) -> None:
        """Fold one event given by its envelope's fields."""
        builders = self._builders
        builders[draft_id] = _apply_fields(builders.get(draft_id), type_, draft_id, seq, ts, data)
        self.count += 1

    def add_envelope(self, envelope: dict[str, Any]) -> None:
        """Fold one decoded envelope (API.md's event shape)."""
        draft_id = envelope["draft_id"]
        b = self._builders.get(draft_id)
        seq = envelope["seq"]
        if envelope["type"] == EventType.SEGMENT_ADDED and b is not None and seq == b.seq + 1:
            # the bulk of any log, inlined (same effect as _apply_fields: a property test
            # in tests/projections/test_fold_properties.py holds them equal)
            s = envelope["data"]["segment"]
            b.segments.append(
                Segment(s["id"], s["author_user_id"], s["content"], s["position"], s["created_at"])
            )
            b.seq = seq
            b.updated_at = envelope["ts"]
            self.count += 1
            return
        self.add(envelope["type"], draft_id, seq, envelope["ts"], envelope["data"])

    def states(self) -> dict[str, DraftState]:
        """Every draft's state so far."""
        return {draft_id: b.freeze() for draft_id, b in self._builders.items()}


class SnapshotFolder(LogFolder):
    """A :class:`LogFolder` for a rebuild, which needs every draft's snapshot bytes, not its state.

    A ``collab.segment_added`` that follows its draft (the bulk of any log) is kept as the dict
    its snapshot writes rather than as a :class:`~projections.state.Segment`: a frozen
    dataclass costs ~1.2 µs to build and serialising it built that dict again. The dict holds the
    same values (a missing field raises the same ``KeyError``), so :meth:`snapshots` gives exactly
    ``state.to_json()`` of :meth:`states` (property test: tests/projections/test_rebuild_properties.py).
    A dict weighs ~160 bytes more than a ``Segment``. Every other event folds as in ``LogFolder``.
    """

    def start_from(self, state: DraftState) -> None:
        """Not supported: a rebuild folds every draft from its first event."""
        raise NotImplementedError("a SnapshotFolder folds drafts from their first event")

    def add_envelope(self, envelope: dict[str, Any]) -> None:
        """Fold one decoded envelope (API.md's event shape)."""
        draft_id = envelope["draft_id"]
        b = self._builders.get(draft_id)
        seq = envelope["seq"]
        if envelope["type"] == EventType.SEGMENT_ADDED and b is not None and seq == b.seq + 1:
            s = envelope["data"]["segment"]
            segments: list[Any] = b.segments
            # read in Segment's field order (the same KeyError if one is missing), kept in sorted
            # key order (what the snapshot writes: state_json)
            i, author, content, place, created = (
                s["id"],
                s["author_user_id"],
                s["content"],
                s["position"],
                s["created_at"],
            )
            segments.append(
                {
                    "author_user_id": author,
                    "content": content,
                    "created_at": created,
                    "id": i,
                    "position": place,
                }
            )
            b.seq = seq
            b.updated_at = envelope["ts"]
            self.count += 1
            return
        self.add(envelope["type"], draft_id, seq, envelope["ts"], envelope["data"])

    def snapshots(self) -> Iterator[tuple[str, int, bytes]]:
        """``(draft id, seq, state JSON)`` of every draft so far, the JSON being ``to_json()``'s."""
        for draft_id, b in self._builders.items():
            yield draft_id, b.seq, state_json(b, [_segment_json(s) for s in b.segments], b.holder, b.history)

    def states(self) -> dict[str, DraftState]:
        """Every draft's state so far (segments built from the kept dicts)."""
        return {
            draft_id: replace(b, segments=[_segment_of(s) for s in b.segments]).freeze()
            for draft_id, b in self._builders.items()
        }


def _segment_json(s: Any) -> dict[str, Any]:
    """A kept segment as its snapshot writes it (the fold's own handler, on a path that then
    refuses the event, may have kept a ``Segment``)."""
    if isinstance(s, Segment):
        return {
            "author_user_id": s.author_user_id,
            "content": s.content,
            "created_at": s.created_at,
            "id": s.id,
            "position": s.position,
        }
    result: dict[str, Any] = s
    return result


def _segment_of(s: Any) -> Segment:
    if isinstance(s, Segment):
        return s
    return Segment(s["id"], s["author_user_id"], s["content"], s["position"], s["created_at"])


def fold_summary(summary: DraftSummary | None, e: FoldableEvent) -> DraftSummary:
    """Keep a draft's list row and member set current without its whole state.

    Equal to ``fold_all(None, events).summary()`` for every log the fold accepts (property
    test in tests/projections/test_fold_properties.py); raises :class:`FoldError` like the fold.
    """
    if e.type == EventType.DRAFT_CREATED:
        if summary is not None:
            raise FoldError(f"draft {e.draft_id!r} was already created")
        return DraftSummary(e.draft_id, e.data["title"], e.seq, e.ts, frozenset([e.data["creator_id"]]))
    if summary is None or e.seq != summary.seq + 1:
        raise FoldError(f"draft {e.draft_id!r}: seq {e.seq} does not follow the summary")
    title = e.data.get("title", summary.title) if e.type == EventType.DRAFT_UPDATED else summary.title
    members = summary.members
    archived = summary.archived
    if e.type == EventType.COLLABORATOR_ADDED:
        members = members | {e.data["collaborator_id"]}
    elif e.type == EventType.COLLABORATOR_REMOVED:
        members = members - {e.data["collaborator_id"]}
    elif e.type == EventType.DRAFT_ARCHIVED:
        archived = True
    elif e.type == EventType.DRAFT_UNARCHIVED:
        archived = False
    return DraftSummary(summary.id, title, e.seq, e.ts, members, archived)
