"""Domain errors: why a command was refused. Nothing was appended when one is raised.

The rules of a draft (raised by :func:`projections.decide.decide`) and the conditions the
application service checks around them (raised by ``server.service.DraftService``) are all
domain errors: none of them knows HTTP. ``server/errors.py`` turns them into the contract's
statuses in one table (API.md "HTTP API" and "Errors added")::

    DomainError                 code                     HTTP   raised by
    ├── ValidationFailed        validation_error         422    decide (field limits), routes (body shape)
    ├── NotFound                not_found                404    decide, the service (unknown or malformed id)
    ├── Forbidden               forbidden                403    decide, the service (If-Match by a viewer)
    ├── NotRingHolder           not_ring_holder          409    decide
    ├── InvalidRingTarget       invalid_ring_target      409    decide
    ├── AlreadyCollaborator     already_collaborator     409    decide
    ├── CannotRemoveCreator     cannot_remove_creator    409    decide (whoever asks)
    ├── NotCollaborator         not_collaborator         409    decide (remove / change role)
    ├── DraftArchived           draft_archived           409    decide: any mutation but (un)archive
    ├── PreconditionFailed      precondition_failed      412    the service: If-Match names another head
    ├── WriteConflict           conflict                 409    the service: lost every optimistic-
    │                                                           concurrency retry within its time budget
    └── IdempotencyKeyReused    idempotency_key_reused   422    the service: the key names another request

``PreconditionFailed`` and ``WriteConflict`` carry the draft's head as ``head_seq`` (also in
``details``), so that a client can refetch and decide again.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """A command was refused; nothing was appended.

    ``code`` is the contract's snake_case error code; ``details`` is JSON-serialisable or None.
    """

    code: ClassVar[str] = "domain_error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationFailed(DomainError):
    """A field's value is outside what the contract allows (``details`` names the fields)."""

    code = "validation_error"


class NotFound(DomainError):
    """No such draft."""

    code = "not_found"


class Forbidden(DomainError):
    """The user's role does not allow this."""

    code = "forbidden"


class NotRingHolder(DomainError):
    """Only the ring holder may append or pass the ring."""

    code = "not_ring_holder"


class InvalidRingTarget(DomainError):
    """The ring can go only to the creator or a contributor other than the holder."""

    code = "invalid_ring_target"


class AlreadyCollaborator(DomainError):
    """The user is already the creator or a collaborator."""

    code = "already_collaborator"


class CannotRemoveCreator(DomainError):
    """The creator cannot be removed from their draft, by anyone (API.md v2 "Access that changes live")."""

    code = "cannot_remove_creator"


class NotCollaborator(DomainError):
    """The user named is not a collaborator of the draft (API.md v2 "Access that changes live")."""

    code = "not_collaborator"


class DraftArchived(DomainError):
    """The draft is archived: only ``archive`` and ``unarchive`` are accepted (API.md v2)."""

    code = "draft_archived"


class PreconditionFailed(DomainError):
    """``If-Match`` named a seq that is not the draft's head (API.md: "first writer wins")."""

    code = "precondition_failed"

    def __init__(self, head_seq: int, expected_seq: int | None = None) -> None:
        message = (
            f"the draft is at seq {head_seq}, not {expected_seq}"
            if expected_seq is not None
            else f"the draft changed meanwhile; it is at seq {head_seq}"
        )
        super().__init__(message, {"head_seq": head_seq})
        self.head_seq = head_seq
        self.expected_seq = expected_seq


class WriteConflict(DomainError):
    """Concurrent writers on the draft kept winning for longer than the service retries.

    Each lost race is the store's ``ConcurrencyConflict``; this is the service giving up after
    its time budget (API.md "Errors added": 409 ``conflict`` with ``details.head_seq``).
    Contention is never reported as unavailability.
    """

    code = "conflict"

    def __init__(self, head_seq: int, retried_for: float | None = None) -> None:
        waited = f" for {retried_for:.1f} s" if retried_for is not None else ""
        super().__init__(
            f"other writers kept changing the draft{waited}; it is at seq {head_seq}, retry",
            {"head_seq": head_seq},
        )
        self.head_seq = head_seq


class IdempotencyKeyReused(DomainError):
    """The user's ``Idempotency-Key`` was first used for another endpoint or body (API.md)."""

    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was already used for another request")
