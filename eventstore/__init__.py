"""The append-only, sequenced event log: envelope, Store protocol, backends, notifier.

Knows nothing of HTTP or of drafts' rules.
"""

from eventstore.errors import (
    ConcurrencyConflict,
    IdempotencyKeyReused,
    LogCorrupted,
    StoreError,
    StoreUnavailable,
)
from eventstore.events import Event, IdempotencyClaim, IdempotencyRecord, NewEvent, Record
from eventstore.notifier import Notifier
from eventstore.store import AppendResult, Snapshot, Store, open_store

__all__ = [
    "AppendResult",
    "ConcurrencyConflict",
    "Event",
    "IdempotencyClaim",
    "IdempotencyKeyReused",
    "IdempotencyRecord",
    "LogCorrupted",
    "NewEvent",
    "Notifier",
    "Record",
    "Snapshot",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "open_store",
]
