"""Domain errors: why a command was refused. The server maps ``code`` to an HTTP status.

DomainError                 code                   (HTTP, mapped in server/errors.py)
├── ValidationFailed        validation_error       422
├── NotFound                not_found              404
├── Forbidden               forbidden              403
├── NotRingHolder           not_ring_holder        409
├── InvalidRingTarget       invalid_ring_target    409
└── AlreadyCollaborator     already_collaborator   409
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """A command broke one of the draft's rules; nothing was appended."""

    code: ClassVar[str] = "domain_error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationFailed(DomainError):
    """A field's value is outside what the contract allows."""

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
