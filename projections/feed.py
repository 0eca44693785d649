"""Who an event concerns: the pure rule behind each user's own feed (API.md v2 "The caller's own feed").

An event *concerns* a user when it is

* ``collab.draft_created`` by them (``data.creator_id``);
* ``collab.collaborator_added`` / ``collab.collaborator_removed`` / ``collab.role_changed``
  naming them (``data.collaborator_id``);
* ``collab.ring_passed`` to them (``data.to_user_id``);
* ``collab.draft_archived`` / ``collab.draft_unarchived`` / ``collab.draft_updated`` of a draft
  they may view *at that moment*: the members of the draft's fold just before the event (these
  three events change no membership, so "before" and "after" agree).

Segments, and event types this version does not know, concern nobody. The rule reads only the
draft's member set before the event, so :class:`FeedFolder` keeps one
:class:`~projections.state.DraftSummary` per draft (``fold_summary``), never whole states.
No I/O here: :mod:`projections.feed_index` reads the log and keeps the index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventstore.values import is_storable_text
from projections.event_types import SUMMARY_TYPES, EventType
from projections.fold import FoldableEvent, FoldError, fold_summary
from projections.state import DraftSummary

NAMING_TYPES: frozenset[str] = frozenset(
    {EventType.COLLABORATOR_ADDED, EventType.COLLABORATOR_REMOVED, EventType.ROLE_CHANGED}
)
"""Events that concern the collaborator they name (``data.collaborator_id``)."""

VIEWER_TYPES: frozenset[str] = frozenset(
    {EventType.DRAFT_ARCHIVED, EventType.DRAFT_UNARCHIVED, EventType.DRAFT_UPDATED}
)
"""Events that concern everyone who may view the draft at that moment."""

QUIET_TYPES_EXCLUDED: frozenset[str] = SUMMARY_TYPES | NAMING_TYPES | VIEWER_TYPES | {EventType.RING_PASSED}
"""Types that may concern someone or change the member set; every other type (segments, unknown
types) concerns nobody and moves a summary's ``seq`` only, as far as this rule reads it."""


NOBODY: frozenset[str] = frozenset()
"""What a segment (and an unknown event type) concerns."""


def concerned_users(before: DraftSummary | None, event: FoldableEvent) -> frozenset[str]:
    """The users whose feed ``event`` belongs to, given the draft's summary just before it.

    ``before`` is the fold of the draft's events ``1 .. event.seq - 1`` (None for seq 1). Pure:
    the same inputs give the same set, so every process, ``rebuild`` and ``copy`` index the same
    entries. Never raises for a well-formed envelope of any type (unknown types concern nobody).
    """
    kind = event.type
    data = event.data
    if kind == EventType.DRAFT_CREATED:
        return frozenset((data["creator_id"],))
    if kind in NAMING_TYPES:
        return frozenset((data["collaborator_id"],))
    if kind == EventType.RING_PASSED:
        return frozenset((data["to_user_id"],))
    if kind in VIEWER_TYPES:
        return before.members if before is not None else NOBODY
    return NOBODY


def storable_users(users: frozenset[str]) -> frozenset[str]:
    """``users`` without the ids no store can keep (not text, or text the log refuses:
    :func:`~eventstore.values.is_storable_text`). ringlog only ever writes storable ids, so only a
    row written past it names others; the feed index leaves those out instead of refusing the
    whole page (which stopped the feed for every user)."""
    if all(type(u) is str and is_storable_text(u) for u in users):
        return users
    return frozenset(u for u in users if type(u) is str and is_storable_text(u))


def check_envelope(envelope: Any) -> None:
    """Refuse a decoded body that is not an event envelope (API.md "Events"): ``KeyError`` for a
    missing field, ``TypeError`` for a value of the wrong kind or a body that is not an object.

    The log's bodies were checked when ringlog wrote them, so this only refuses rows written past
    it, before they reach a fold, a summary or a sort (:data:`~projections.fold.UNFOLDABLE`).
    """
    if not isinstance(envelope, dict):
        raise TypeError(f"not an event envelope: a JSON {type(envelope).__name__}, not an object")
    if not (
        isinstance(envelope["type"], str)
        and isinstance(envelope["draft_id"], str)
        and type(envelope["seq"]) is int  # not a bool
        and isinstance(envelope["ts"], str)
        and isinstance(envelope["data"], dict)
    ):
        raise TypeError(
            "not an event envelope: type, draft_id and ts must be strings, seq an integer, data an object"
        )


@dataclass(frozen=True, slots=True)
class Envelope:
    """An event decoded from the log's bytes, as the fold reads it (rebuilds skip the model)."""

    type: str
    draft_id: str
    seq: int
    ts: str
    data: dict[str, Any]

    @classmethod
    def of(cls, envelope: dict[str, Any]) -> Envelope:
        """The fields of a decoded envelope (API.md "Events").

        Raises ``KeyError`` for a missing field and ``TypeError`` for a value of the wrong kind
        (or a body that is not an object): the log's bodies were checked when ringlog wrote them,
        so this only refuses rows written past it, before they reach a fold, a summary or a sort
        (:data:`~projections.fold.UNFOLDABLE`).
        """
        check_envelope(envelope)
        return cls(envelope["type"], envelope["draft_id"], envelope["seq"], envelope["ts"], envelope["data"])


class FeedFolder:
    """Folds the log, event by event in position order, into feed entries.

    Keeps each draft's summary as of the last event folded (:attr:`summaries`); :meth:`add`
    returns the users an event concerns and advances the draft's summary. A draft whose summary
    is missing or does not sit just before the event (a process that starts at a checkpoint, or
    summaries seeded from elsewhere) must be given one with :meth:`seed` first: :meth:`needs`
    says so.

    ``collab.segment_added`` (most of any log) concerns nobody and moves only the summary's
    ``seq`` and ``updated_at``: it updates them in place and the summary object is built again
    only when another event needs it (``fold_summary`` of a segment changes nothing else). A
    rebuild then makes no object per segment (:meth:`add_envelope`).
    """

    def __init__(self) -> None:
        self._drafts: dict[str, list[Any]] = {}
        """draft id → [summary as of the last event that was not a segment, seq, updated_at]."""

    @property
    def summaries(self) -> dict[str, DraftSummary]:
        """Every draft's summary as of the last event folded."""
        return {draft_id: self._current(entry) for draft_id, entry in self._drafts.items()}

    @staticmethod
    def _current(entry: list[Any]) -> DraftSummary:
        summary: DraftSummary = entry[0]
        if entry[1] != summary.seq:
            summary = entry[0] = DraftSummary(
                summary.id, summary.title, entry[1], entry[2], summary.members, summary.archived
            )
        return summary

    def needs(self, event: FoldableEvent) -> bool:
        """True when the draft's summary just before ``event`` is not known here."""
        entry = self._drafts.get(event.draft_id)
        if entry is None:
            return event.seq != 1
        return bool(entry[1] != event.seq - 1)

    def seed(self, draft_id: str, summary: DraftSummary | None) -> None:
        """Set the draft's summary (None: forget it, the draft starts again at seq 1)."""
        if summary is None:
            self._drafts.pop(draft_id, None)
        else:
            self._drafts[draft_id] = [summary, summary.seq, summary.updated_at]

    def skip(self, draft_id: str, seq: int, kind: str) -> bool:
        """Advance past an event that concerns nobody without decoding it; True if it did.

        Only for an event of a type outside :data:`QUIET_TYPES_EXCLUDED` (a segment) whose
        draft's summary sits just before it: its ``seq`` moves on (``updated_at`` is left as it
        was, which :func:`concerned_users` never reads), exactly as :meth:`add` would leave the
        member set, and nobody is concerned. Otherwise nothing changes and the caller decodes the
        event for :meth:`needs` / :meth:`add`.
        """
        if kind in QUIET_TYPES_EXCLUDED:
            return False
        entry = self._drafts.get(draft_id)
        if entry is None or entry[1] != seq - 1:
            return False
        entry[1] = seq  # in place, like add's segment shortcut (updated_at stays)
        return True

    def add(self, event: FoldableEvent) -> frozenset[str]:
        """The users ``event`` concerns; the draft's summary moves past it.

        Raises :class:`~projections.fold.FoldError` when the event does not follow the summary
        (check :meth:`needs` first); nothing changes then.
        """
        entry = self._drafts.get(event.draft_id)
        if entry is not None and event.type == EventType.SEGMENT_ADDED and event.seq == entry[1] + 1:
            entry[1], entry[2] = event.seq, event.ts
            return NOBODY
        before = self._current(entry) if entry is not None else None
        after = fold_summary(before, event)
        users = concerned_users(before, event)
        self._drafts[event.draft_id] = [after, after.seq, after.updated_at]
        return users

    def add_envelope(self, envelope: dict[str, Any]) -> frozenset[str]:
        """:meth:`add` of an envelope decoded from the log's bytes (property test: the same feed
        and summaries as :meth:`add`).

        An event outside :data:`~projections.event_types.SUMMARY_TYPES` (a segment, a ring pass,
        a role change: most of any log) that follows its draft's summary moves only the
        summary's ``seq`` and ``updated_at`` (``fold_summary`` changes nothing else for it): they
        are updated in place, with no object built but the answer (the ring's new holder, or the
        collaborator whose role changed, as :func:`concerned_users` names them).
        """
        kind = envelope["type"]
        if kind not in SUMMARY_TYPES:
            entry = self._drafts.get(envelope["draft_id"])
            if entry is not None:
                seq = envelope["seq"]
                if seq == entry[1] + 1:
                    entry[1], entry[2] = seq, envelope["ts"]
                    if kind == EventType.RING_PASSED:
                        return frozenset((envelope["data"]["to_user_id"],))
                    if kind == EventType.ROLE_CHANGED:
                        return frozenset((envelope["data"]["collaborator_id"],))
                    return NOBODY
        return self.add(Envelope.of(envelope))


def summary_before(events: list[FoldableEvent], base: DraftSummary | None) -> DraftSummary | None:
    """Fold ``events`` (one draft's, consecutive, following ``base``) into ``base``'s summary.

    Raises :class:`~projections.fold.FoldError` if they do not follow it.
    """
    summary = base
    for event in events:
        summary = fold_summary(summary, event)
    return summary


__all__ = ["NOBODY", "Envelope", "FeedFolder", "FoldError", "concerned_users", "summary_before"]
