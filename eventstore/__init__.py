"""The append-only, sequenced event log: streams of records, a Store protocol, its backends.

Knows nothing of HTTP or of drafts' rules (a draft's events are one stream). Modules:

* :mod:`eventstore.events`      value types (Event envelope, NewEvent, Record, AppendResult,
                                Snapshot, idempotency claims) and their canonical encoding
* :mod:`eventstore.values`      the one rule for what every backend can store
* :mod:`eventstore.errors`      the error tree
* :mod:`eventstore.store`       the Store protocol and its optional capabilities
* :mod:`eventstore.factory`     URL → backend (``open_store``), ``sqlite_path``
* :mod:`eventstore.memory`, :mod:`eventstore.sqlite`, :mod:`eventstore.postgres`  the backends
* :mod:`eventstore.sql`         what the SQL backends share; :mod:`eventstore.groupcommit` their writer
* :mod:`eventstore.notifier`    wakes readers after a commit
* :mod:`eventstore.verify`, :mod:`eventstore.copy`  whole-log checks and store-to-store copy
* :mod:`eventstore.ownership`   the writer lock of a log (servers share it, tools own it)
"""

from eventstore.errors import (
    ConcurrencyConflict,
    IdempotencyKeyReused,
    LogCorrupted,
    StoreError,
    StoreLocked,
    StoreUnavailable,
    UnrepresentableValue,
)
from eventstore.events import (
    AppendResult,
    Event,
    IdempotencyClaim,
    IdempotencyRecord,
    NewEvent,
    Record,
    Snapshot,
)
from eventstore.factory import open_store
from eventstore.notifier import Notifier
from eventstore.store import Store

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
    "StoreLocked",
    "StoreUnavailable",
    "UnrepresentableValue",
    "open_store",
]
