"""decide(state, command) -> events: the draft's rules (API.md's role table), no I/O.

Checks run in this order, so a caller learns the most relevant reason first: the draft exists
(404), the caller's role allows the command (403), the fields are valid (422), the ring rules
hold (409).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from eventstore.events import NewEvent
from projections.errors import (
    AlreadyCollaborator,
    CannotRemoveCreator,
    DomainError,
    DraftArchived,
    Forbidden,
    InvalidRingTarget,
    NotCollaborator,
    NotFound,
    NotRingHolder,
    ValidationFailed,
)
from projections.event_types import EventType
from projections.fold import FoldableEvent
from projections.state import DraftState


@dataclass(frozen=True, slots=True)
class Limits:
    """Field limits (configurable on the server)."""

    title_max: int = 200
    description_max: int = 2000
    content_max: int = 10_000
    user_id_max: int = 128


@dataclass(frozen=True, slots=True)
class CreateDraft:
    """Start a draft; the creator holds the ring."""

    user_id: str
    draft_id: str
    title: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class AppendSegment:
    """The ring holder adds a segment."""

    user_id: str
    content: str


@dataclass(frozen=True, slots=True)
class PassRing:
    """The ring holder hands the ring to the creator or a contributor."""

    user_id: str
    to_user_id: str


@dataclass(frozen=True, slots=True)
class AddCollaborator:
    """The creator or a contributor invites someone."""

    user_id: str
    collaborator_id: str
    role: str


@dataclass(frozen=True, slots=True)
class UpdateDraft:
    """The creator or a contributor changes the title and/or description."""

    user_id: str
    title: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class RemoveCollaborator:
    """Take a collaborator off the draft (API.md v2 "Access that changes live").

    The creator may remove anyone but themselves; a contributor, viewers and themselves; a
    viewer, themselves. If the removed user holds the ring it goes back to the creator.
    """

    user_id: str
    collaborator_id: str


@dataclass(frozen=True, slots=True)
class ChangeRole:
    """The creator makes a collaborator a ``contributor`` or a ``viewer`` (API.md v2).

    A ring holder demoted to viewer gives the ring back to the creator.
    """

    user_id: str
    collaborator_id: str
    role: str


@dataclass(frozen=True, slots=True)
class ArchiveDraft:
    """The creator archives (``archived=True``) or unarchives the draft (API.md v2)."""

    user_id: str
    archived: bool


SEGMENT_ID_IS_LOG_POSITION = ("segment", "id")
"""Where in ``collab.segment_added``'s data the store writes the event's global log position:
a segment's id *is* that position (projections/state.py says what each number means)."""

Command = (
    CreateDraft
    | AppendSegment
    | PassRing
    | AddCollaborator
    | UpdateDraft
    | RemoveCollaborator
    | ChangeRole
    | ArchiveDraft
)

DEFAULT_LIMITS = Limits()


def user_id_char_refused(ch: str) -> bool:
    """True for a character no user id may hold (one code point ``ch``).

    Refused: whitespace (:data:`WHITESPACE`), control characters (Unicode category Cc), format
    characters (Cf: U+200B zero-width space, U+202E right-to-left override, U+FEFF, … — they are
    invisible, so an id shown as "alice" could be another user's), surrogates (Cs: not Unicode
    scalar values, so neither storable nor sendable as UTF-8), private use (Co) and the 66
    noncharacters (U+FDD0–U+FDEF and U+xFFFE/U+xFFFF of every plane; Unicode §23.7).
    Unassigned code points (Cn) are *not* refused: which ones are unassigned depends on the
    Unicode version, so a schema consumer could not agree with us. Categories are those of
    Python's ``unicodedata`` (Unicode 15.0 in Python 3.11).
    """
    code = ord(ch)
    return (
        ch in WHITESPACE
        or 0xFDD0 <= code <= 0xFDEF
        or code & 0xFFFE == 0xFFFE
        or unicodedata.category(ch) in _REFUSED_CATEGORIES
    )


_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co"})


def user_id_refused_ranges() -> list[tuple[int, int]]:
    """Every code point :func:`user_id_char_refused` refuses, as sorted inclusive ranges.

    ``/openapi.json``'s user-id ``pattern`` is generated from this, so the schema and
    :func:`valid_user_id` agree on every code point (tests/hardening/test_blank_titles.py).
    """
    ranges: list[tuple[int, int]] = []
    for code in range(0x110000):
        if user_id_char_refused(chr(code)):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    return ranges


def user_id_rule(limits: Limits = DEFAULT_LIMITS) -> str:
    """The user-id rule in words, to follow the name of the input that broke it: "must be 1–128
    characters …" (every channel names its own input: X-User-Id, user_id, sub, --user-id)."""
    return (
        f"must be 1–{limits.user_id_max} characters with no whitespace, control, invisible "
        "(Unicode format), private-use, surrogate or noncharacter code points"
    )


def valid_user_id(user_id: object, limits: Limits = DEFAULT_LIMITS) -> bool:
    """1–``user_id_max`` characters, none refused by :func:`user_id_char_refused` (no
    whitespace, control, format, surrogate, private-use or noncharacter). The one user-id rule,
    for every channel: X-User-Id, a JWT's ``sub``, ids in bodies and paths, and the Python
    client (API.md "Limits"; docs/API.md "User ids")."""
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= limits.user_id_max:
        return False
    if user_id.isascii() and user_id.isprintable() and " " not in user_id:
        # U+0021–U+007E only (what nearly every id is): none of them is refused, so the
        # per-character check below (~0.1 µs a character, on every request) is skipped
        return True
    return not any(user_id_char_refused(ch) for ch in user_id)


def decide(
    state: DraftState | None, command: Command, now: str, limits: Limits = DEFAULT_LIMITS
) -> list[NewEvent]:
    """The events ``command`` produces against ``state``, or raise a DomainError.

    ``state`` is None when the draft does not exist; ``now`` is the events' timestamp. An
    empty list means the command changes nothing (same role, already (un)archived, same title).
    While the draft is archived every command but :class:`ArchiveDraft` raises
    :class:`DraftArchived` once the caller's right to it is established (API.md v2).
    """
    if isinstance(command, CreateDraft):
        return _create(command, now, limits)
    if state is None:
        raise NotFound("draft not found")
    if isinstance(command, RemoveCollaborator):
        return _remove_collaborator(state, command, now, limits)
    if isinstance(command, ChangeRole):
        return _change_role(state, command, now, limits)
    if isinstance(command, ArchiveDraft):
        return _archive(state, command, now)
    role = state.role_of(command.user_id)
    if role is None:
        raise Forbidden("you are not a collaborator on this draft")
    if role == "viewer":
        raise Forbidden("viewers cannot change the draft")
    if not state.archived:
        return _writer_command(state, command, now, limits)
    try:  # the fields are checked first (422 before 409, whatever the draft's state is)
        _writer_command(state, command, now, limits)
    except ValidationFailed:
        raise
    except DomainError:
        pass
    raise DraftArchived("the draft is archived; unarchive it first")


def _writer_command(
    state: DraftState,
    command: AppendSegment | PassRing | AddCollaborator | UpdateDraft,
    now: str,
    limits: Limits,
) -> list[NewEvent]:
    if isinstance(command, AppendSegment):
        return _append_segment(state, command, now, limits)
    if isinstance(command, PassRing):
        return _pass_ring(state, command, now, limits)
    if isinstance(command, AddCollaborator):
        return _add_collaborator(state, command, now, limits)
    return _update(state, command, now, limits)


def _check(errors: dict[str, str]) -> None:
    if errors:
        raise ValidationFailed("invalid fields: " + ", ".join(sorted(errors)), details=errors)


WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
"""The characters a title may not consist of only: exactly Python's ``str.isspace()`` (Unicode
White_Space plus the four separators U+001C–U+001F); ``/openapi.json``'s title ``pattern``
spells this same set out (tests/hardening/test_blank_titles.py holds them equal over every
code point)."""


def is_blank(text: str) -> bool:
    """True when every character of ``text`` is in :data:`WHITESPACE` (also for ``""``)."""
    return all(ch in WHITESPACE for ch in text)


def _title_error(title: str, limits: Limits) -> str | None:
    if not 1 <= len(title) <= limits.title_max or is_blank(title):
        return f"must be 1–{limits.title_max} characters, not all blank"
    return None


def _description_error(description: str, limits: Limits) -> str | None:
    if len(description) > limits.description_max:
        return f"must be at most {limits.description_max} characters"
    return None


def _create(c: CreateDraft, now: str, limits: Limits) -> list[NewEvent]:
    errors: dict[str, str] = {}
    if (err := _title_error(c.title, limits)) is not None:
        errors["title"] = err
    if (err := _description_error(c.description, limits)) is not None:
        errors["description"] = err
    _check(errors)
    data = {"title": c.title, "description": c.description, "creator_id": c.user_id}
    return [NewEvent(EventType.DRAFT_CREATED, c.user_id, now, data)]


def _append_segment(s: DraftState, c: AppendSegment, now: str, limits: Limits) -> list[NewEvent]:
    if not 1 <= len(c.content) <= limits.content_max:
        _check({"content": f"must be 1–{limits.content_max} characters"})
    if s.ring_state.current_holder_id != c.user_id:
        raise NotRingHolder("only the ring holder may append a segment")
    place_in_draft = len(s.segments) + 1
    segment = {
        "id": 0,  # the log position, written by the store at append (SEGMENT_ID_IS_LOG_POSITION)
        "author_user_id": c.user_id,
        "content": c.content,
        "position": place_in_draft,
        "created_at": now,
    }
    data = {"segment": segment}
    return [NewEvent(EventType.SEGMENT_ADDED, c.user_id, now, data, SEGMENT_ID_IS_LOG_POSITION)]


def _pass_ring(s: DraftState, c: PassRing, now: str, limits: Limits) -> list[NewEvent]:
    if not valid_user_id(c.to_user_id, limits):
        _check({"to_user_id": f"must be 1–{limits.user_id_max} characters without whitespace"})
    if s.ring_state.current_holder_id != c.user_id:
        raise NotRingHolder("only the ring holder may pass the ring")
    if c.to_user_id == c.user_id:
        raise InvalidRingTarget("you cannot pass the ring to yourself")
    if s.role_of(c.to_user_id) not in ("creator", "contributor"):
        raise InvalidRingTarget("the ring can go only to the creator or a contributor")
    history = [*s.ring_state.holders_history, c.to_user_id]
    data = {
        "from_user_id": c.user_id,
        "to_user_id": c.to_user_id,
        "current_holder_id": c.to_user_id,
        "holders_history": history,
    }
    return [NewEvent(EventType.RING_PASSED, c.user_id, now, data)]


def _add_collaborator(s: DraftState, c: AddCollaborator, now: str, limits: Limits) -> list[NewEvent]:
    errors: dict[str, str] = {}
    if not valid_user_id(c.collaborator_id, limits):
        errors["user_id"] = f"must be 1–{limits.user_id_max} characters without whitespace"
    if c.role not in ("contributor", "viewer"):
        errors["role"] = "must be 'contributor' or 'viewer'"
    _check(errors)
    if s.role_of(c.collaborator_id) is not None:
        raise AlreadyCollaborator(f"{c.collaborator_id} is already on this draft")
    data = {"collaborator_id": c.collaborator_id, "role": c.role, "joined_at": now}
    return [NewEvent(EventType.COLLABORATOR_ADDED, c.user_id, now, data)]


def _update(s: DraftState, c: UpdateDraft, now: str, limits: Limits) -> list[NewEvent]:
    errors: dict[str, str] = {}
    if c.title is None and c.description is None:
        errors["title"] = "give title and/or description"
    if c.title is not None and (err := _title_error(c.title, limits)) is not None:
        errors["title"] = err
    if c.description is not None and (err := _description_error(c.description, limits)) is not None:
        errors["description"] = err
    _check(errors)
    data: dict[str, str] = {}
    if c.title is not None and c.title != s.title:
        data["title"] = c.title
    if c.description is not None and c.description != s.description:
        data["description"] = c.description
    if not data:
        return []  # nothing changed: nothing to record
    return [NewEvent(EventType.DRAFT_UPDATED, c.user_id, now, data)]


def _ring_back_to_creator(s: DraftState, leaving: str, caused_by: str, now: str) -> list[NewEvent]:
    """The ``collab.ring_passed`` that returns the ring to the creator when its holder loses the
    right to hold it (removed, or demoted to viewer): API.md v2, "in the same append"."""
    if s.ring_state.current_holder_id != leaving:
        return []
    data = {
        "from_user_id": leaving,
        "to_user_id": s.creator_id,
        "current_holder_id": s.creator_id,
        "holders_history": [*s.ring_state.holders_history, s.creator_id],
    }
    return [NewEvent(EventType.RING_PASSED, caused_by, now, data)]


def is_ring_return(previous: FoldableEvent, event: FoldableEvent) -> bool:
    """True when ``event`` is the ``collab.ring_passed`` that :func:`decide` appends together with
    ``previous`` (a removal, or a demotion to viewer, of the ring holder) — the two are one append.

    Exact from the log alone: once removed or made viewer, a user can no longer pass the ring
    themselves, so a ``ring_passed`` from them right after that event is the automatic return.
    The service uses it to replay an Idempotency-Key (kept on an append's first record) with
    the state after the whole append.
    """
    if event.type != EventType.RING_PASSED or event.seq != previous.seq + 1:
        return False
    demoted = previous.type == EventType.ROLE_CHANGED and previous.data.get("to_role") == "viewer"
    if previous.type != EventType.COLLABORATOR_REMOVED and not demoted:
        return False
    leaving = previous.data.get("collaborator_id")
    return leaving is not None and event.data.get("from_user_id") == leaving


def _collaborator_id_error(collaborator_id: str, limits: Limits) -> None:
    if not valid_user_id(collaborator_id, limits):
        _check({"user_id": f"must be 1–{limits.user_id_max} characters without whitespace"})


def _remove_collaborator(s: DraftState, c: RemoveCollaborator, now: str, limits: Limits) -> list[NewEvent]:
    """API.md v2 rights: creator → anyone but themselves; contributor → viewers and themselves;
    viewer → themselves. Refusals in order: 409 cannot_remove_creator (whoever asks), 403 for a
    stranger, 422 for an id that no user can have, 409 not_collaborator, 403 by the table, 409
    draft_archived."""
    target = c.collaborator_id
    if target == s.creator_id:
        raise CannotRemoveCreator("the creator cannot be removed from the draft")
    caller = s.role_of(c.user_id)
    if caller is None:
        raise Forbidden("you are not a collaborator on this draft")
    _collaborator_id_error(target, limits)
    role = s.role_of(target)
    if role is None or role == "creator":
        raise NotCollaborator(f"{target} is not a collaborator on this draft")
    allowed = caller == "creator" or target == c.user_id or (caller == "contributor" and role == "viewer")
    if not allowed:
        raise Forbidden("contributors may remove viewers and themselves; viewers only themselves")
    if s.archived:
        raise DraftArchived("the draft is archived; unarchive it first")
    return [
        NewEvent(EventType.COLLABORATOR_REMOVED, c.user_id, now, {"collaborator_id": target, "role": role}),
        *_ring_back_to_creator(s, target, c.user_id, now),
    ]


def _change_role(s: DraftState, c: ChangeRole, now: str, limits: Limits) -> list[NewEvent]:
    """Only the creator; 422 for a role other than contributor/viewer or an impossible id; 409
    not_collaborator for the creator or a stranger; 409 draft_archived; same role: nothing."""
    if s.role_of(c.user_id) != "creator":
        raise Forbidden("only the creator may change roles")
    errors: dict[str, str] = {}
    if not valid_user_id(c.collaborator_id, limits):
        errors["user_id"] = f"must be 1–{limits.user_id_max} characters without whitespace"
    if c.role not in ("contributor", "viewer"):
        errors["role"] = "must be 'contributor' or 'viewer'"
    _check(errors)
    role = s.role_of(c.collaborator_id)
    if role is None or role == "creator":
        raise NotCollaborator(f"{c.collaborator_id} is not a collaborator on this draft")
    if s.archived:
        raise DraftArchived("the draft is archived; unarchive it first")
    if role == c.role:
        return []
    data = {"collaborator_id": c.collaborator_id, "from_role": role, "to_role": c.role}
    events = [NewEvent(EventType.ROLE_CHANGED, c.user_id, now, data)]
    if c.role == "viewer":
        events += _ring_back_to_creator(s, c.collaborator_id, c.user_id, now)
    return events


def _archive(s: DraftState, c: ArchiveDraft, now: str) -> list[NewEvent]:
    """Only the creator; already in that state: nothing."""
    if s.role_of(c.user_id) != "creator":
        raise Forbidden("only the creator may archive or unarchive the draft")
    if s.archived == c.archived:
        return []
    type_ = EventType.DRAFT_ARCHIVED if c.archived else EventType.DRAFT_UNARCHIVED
    return [NewEvent(type_, c.user_id, now, {})]
