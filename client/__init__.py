"""The v1 import name of the Python client (API.md: ``from client import DraftStream``).

New code imports :mod:`ringlog` instead (``from ringlog import DraftStream``): ``client`` is a
common module name in users' own projects, ``ringlog`` is not. This module only re-exports.
"""

from ringlog import (
    AccessRevoked,
    ApiError,
    Backoff,
    Collaborator,
    DraftState,
    DraftStream,
    DraftSummary,
    Event,
    EventType,
    FoldError,
    RinglogClient,
    RingState,
    Segment,
    SeqOrderer,
    StreamError,
    fold,
)

__all__ = [
    "AccessRevoked",
    "ApiError",
    "Backoff",
    "Collaborator",
    "DraftState",
    "DraftStream",
    "DraftSummary",
    "Event",
    "EventType",
    "FoldError",
    "RingState",
    "RinglogClient",
    "Segment",
    "SeqOrderer",
    "StreamError",
    "fold",
]
