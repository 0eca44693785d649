"""The Python client: a resuming event stream and REST helpers with safe retries."""

from client.backoff import Backoff
from client.models import Collaborator, DraftState, DraftSummary, Event, RingState, Segment, fold
from client.ordering import SeqOrderer
from client.rest import ApiError, RinglogClient
from client.stream import DraftStream, StreamError

__all__ = [
    "ApiError",
    "Backoff",
    "Collaborator",
    "DraftState",
    "DraftStream",
    "DraftSummary",
    "Event",
    "RingState",
    "RinglogClient",
    "Segment",
    "SeqOrderer",
    "StreamError",
    "fold",
]
