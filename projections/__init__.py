"""Pure domain code: draft state, the fold over events, the decide() rules, the projector."""

from projections.decide import (
    AddCollaborator,
    AppendSegment,
    Command,
    CreateDraft,
    PassRing,
    UpdateDraft,
    decide,
)
from projections.errors import (
    AlreadyCollaborator,
    DomainError,
    Forbidden,
    IdempotencyKeyReused,
    InvalidRingTarget,
    NotFound,
    NotRingHolder,
    PreconditionFailed,
    ValidationFailed,
    WriteConflict,
)
from projections.fold import fold, fold_all, state_at
from projections.state import Collaborator, DraftState, DraftSummary, RingState, Segment

__all__ = [
    "AddCollaborator",
    "AlreadyCollaborator",
    "AppendSegment",
    "Collaborator",
    "Command",
    "CreateDraft",
    "DomainError",
    "DraftState",
    "DraftSummary",
    "Forbidden",
    "IdempotencyKeyReused",
    "InvalidRingTarget",
    "NotFound",
    "NotRingHolder",
    "PassRing",
    "PreconditionFailed",
    "RingState",
    "Segment",
    "UpdateDraft",
    "ValidationFailed",
    "WriteConflict",
    "decide",
    "fold",
    "fold_all",
    "state_at",
]
