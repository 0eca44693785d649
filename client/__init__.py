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
    DraftSubscription,
    DraftSummary,
    Event,
    EventType,
    FeedItem,
    FeedStream,
    FoldError,
    RinglogClient,
    RinglogSocket,
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
    "DraftSubscription",
    "DraftSummary",
    "Event",
    "EventType",
    "FeedItem",
    "FeedStream",
    "FoldError",
    "RingState",
    "RinglogClient",
    "RinglogSocket",
    "Segment",
    "SeqOrderer",
    "StreamError",
    "fold",
]
