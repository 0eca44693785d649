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
    InvalidRingTarget,
    NotFound,
    NotRingHolder,
    ValidationFailed,
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
    "InvalidRingTarget",
    "NotFound",
    "NotRingHolder",
    "PassRing",
    "RingState",
    "Segment",
    "UpdateDraft",
    "ValidationFailed",
    "decide",
    "fold",
    "fold_all",
    "state_at",
]
