"""What the SQL backends share: the stored columns, row conversion, and the writer's bounds.

Both schemas (:mod:`eventstore.sqlite`, :mod:`eventstore.pg_schema`) keep the column names the
first version wrote, ``draft_id`` included: renaming a column would need a migration of every
existing database, so the stream id is stored in the column ``draft_id``, and logs written before
the log layer spoke of streams open, verify and copy unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from eventstore.errors import StoreError
from eventstore.events import IdempotencyClaim, Record

RECORD_COLUMNS = "position, draft_id, seq, type, body, hash, idem_user, idem_key, idem_fp"
"""The nine stored columns of a record, in :func:`record_row` order (``draft_id`` holds the stream id)."""

MAX_GROUP = 1000
"""Appends committed together at most (bounds one transaction's size and latency)."""

QUEUE_SIZE = 10_000
"""Appends waiting for the writer at most; callers beyond it wait (back-pressure)."""


def record_from_row(row: Sequence[Any]) -> Record:
    """Build a Record from a row selected with :data:`RECORD_COLUMNS`."""
    claim = IdempotencyClaim(row[6], row[7], row[8]) if row[7] is not None else None
    return Record(int(row[0]), row[1], int(row[2]), row[3], bytes(row[4]), bytes(row[5]), claim)


def record_row(r: Record) -> tuple[Any, ...]:
    """A record as the nine stored columns of :data:`RECORD_COLUMNS`."""
    c = r.idempotency
    return (
        r.position,
        r.stream_id,
        r.seq,
        r.type,
        r.body,
        r.hash,
        c.user_id if c else None,
        c.key if c else None,
        c.fingerprint if c else None,
    )


ErrorMapping = Callable[[BaseException, str], StoreError | None]
"""A backend's one driver-error mapping: (lower-layer error, action) -> the store's error, or
None for an error that is not the driver's (it propagates unchanged)."""


@contextlib.contextmanager
def mapped_errors(to_store_error: ErrorMapping, action: str) -> Iterator[None]:
    """Re-raise a lower-layer error as the store's, ``from`` the original (httpcore's
    ``map_exceptions`` habit); ``action`` names what was being done, for the message."""
    try:
        yield
    except Exception as e:
        mapped = to_store_error(e, action)
        if mapped is None or mapped is e:
            raise
        raise mapped from e
