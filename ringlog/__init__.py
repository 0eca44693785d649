"""ringlog's Python client: a resuming event stream and REST helpers with safe retries.

The public, collision-free import name for users::

    from ringlog import DraftStream, RinglogClient

``DraftStream`` delivers a draft's events exactly once, in seq order, across reconnects (API.md
"Python client"); ``RinglogClient`` sends REST requests with an ``Idempotency-Key`` so retries
are safe, and takes ``if_match=`` on every mutation. A stream whose user loses access ends with
:class:`AccessRevoked` (a :class:`StreamError`, code ``access_revoked``) after the removal event. ``DraftState``, its parts and :func:`fold` are the server's own definitions, and
:class:`EventType` is the one list of event types.
:class:`RinglogSocket` follows many drafts on one ``GET /v1/ws`` connection (API.md v2): one
:class:`DraftSubscription` per draft, presence, and the caller's feed (:class:`FeedStream` of
:class:`FeedItem`), all resumed after reconnects. The older import name ``client`` (API.md
v1: ``from client import DraftStream``) re-exports exactly these names.
"""

from projections.event_types import EventType
from ringlog.backoff import Backoff
from ringlog.models import (
    Collaborator,
    DraftState,
    DraftSummary,
    Event,
    FeedItem,
    FoldError,
    RingState,
    Segment,
    fold,
)
from ringlog.ordering import SeqOrderer
from ringlog.rest import ApiError, RinglogClient
from ringlog.socket import DraftSubscription, FeedStream, RinglogSocket
from ringlog.stream import AccessRevoked, DraftStream, StreamError

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
