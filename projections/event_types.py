"""The one list of event types a draft's log may hold (API.md "Events").

Every module that writes, folds, describes or filters events names them through
:class:`EventType`; nothing else spells a ``collab.*`` string. This module imports nothing, so
the Python client (``ringlog``) and the operator scripts use it without pulling in the server.
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    """The ``type`` of an event envelope; a ``str``, so it compares equal to the wire string.

    ``data`` of each type (API.md "Events"):

    * ``DRAFT_CREATED`` — ``{"title", "description", "creator_id"}``; always seq 1.
    * ``SEGMENT_ADDED`` — ``{"segment": {"id", "author_user_id", "content", "position", "created_at"}}``.
    * ``RING_PASSED`` — ``{"from_user_id", "to_user_id", "current_holder_id", "holders_history"}``.
    * ``COLLABORATOR_ADDED`` — ``{"collaborator_id", "role", "joined_at"}``.
    * ``DRAFT_UPDATED`` — ``{"title"?, "description"?}`` (only the fields that changed).
    * ``COLLABORATOR_REMOVED`` — ``{"collaborator_id", "role"}`` (the role they had).
    * ``ROLE_CHANGED`` — ``{"collaborator_id", "from_role", "to_role"}``.
    * ``DRAFT_ARCHIVED`` / ``DRAFT_UNARCHIVED`` — ``{}``.

    The last four are API.md v2 "Access that changes live"; a removal or demotion of the ring
    holder is followed, in the same append, by a ``RING_PASSED`` back to the creator.

    A log may also hold types this version does not know (written by a newer server): folds
    treat them as advancing ``seq`` only, so compare ``event.type`` with members, never
    convert an arbitrary string with ``EventType(...)`` without handling ``ValueError``.
    """

    DRAFT_CREATED = "collab.draft_created"
    SEGMENT_ADDED = "collab.segment_added"
    RING_PASSED = "collab.ring_passed"
    COLLABORATOR_ADDED = "collab.collaborator_added"
    DRAFT_UPDATED = "collab.draft_updated"
    COLLABORATOR_REMOVED = "collab.collaborator_removed"
    ROLE_CHANGED = "collab.role_changed"
    DRAFT_ARCHIVED = "collab.draft_archived"
    DRAFT_UNARCHIVED = "collab.draft_unarchived"


ACCESS_EVENT_TYPES: frozenset[str] = frozenset(
    {EventType.COLLABORATOR_ADDED, EventType.COLLABORATOR_REMOVED, EventType.ROLE_CHANGED}
)
"""The events that change who may view a draft (folded by ``projections.access.ViewAccess``)."""


EVENT_TYPE_PREFIX = "collab."
"""Every event type starts with this; other WebSocket messages (``connected``, ``error``…) do not."""


SUMMARY_TYPES: frozenset[str] = frozenset(
    {
        EventType.DRAFT_CREATED,
        EventType.DRAFT_UPDATED,
        EventType.COLLABORATOR_ADDED,
        EventType.COLLABORATOR_REMOVED,
        EventType.DRAFT_ARCHIVED,
        EventType.DRAFT_UNARCHIVED,
    }
)
"""The events that change a draft's list row or member set beyond its ``seq`` and ``updated_at``
(``projections.fold.fold_summary``). Every other type, unknown ones included, moves only those
two, so a projector may advance a summary past it from the record's ``seq`` without decoding it
(``projections.runner``, ``projections.feed``)."""
