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


FEED_TABLE = """
CREATE TABLE IF NOT EXISTS feed (
    user_id  TEXT   NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (user_id, position)
)"""
"""The feed index (API.md v2 "The caller's own feed"), the same on both backends: one row per user
an event concerns, keyed by ``(user_id, position)``; its checkpoint is the ``meta`` row
:data:`FEED_CHECKPOINT_KEY`. Derived data: ``ringlog rebuild`` writes it again from the log.
Added by ``CREATE … IF NOT EXISTS`` at every open, so an existing database gains it in place (its
index is then built from the log by the first server that starts)."""

FEED_CHECKPOINT_KEY = "feed_checkpoint"
"""The ``meta`` key of the feed index's checkpoint (a decimal global position)."""


def feed_entries_to_add(
    entries: Sequence[tuple[str, int]], after: int, upto: int, current: int
) -> list[tuple[str, int]] | None:
    """What a feed index write adds, given the checkpoint ``current`` read in its transaction.

    None when ``current`` is not in ``after .. upto - 1`` (another writer has indexed this range
    already, or a range before it is missing: the write changes nothing and returns ``current``);
    otherwise the ``(user_id, position)`` entries past ``current``, after which the checkpoint
    moves to ``upto`` (see :meth:`eventstore.store.Store.feed_index`).
    """
    if not after <= current < upto:
        return None
    return [e for e in entries if e[1] > current]


def feed_read_query(user_id: str, after: str, upto: str, limit: str) -> str:
    """A feed read's SQL, given each backend's placeholders for its four parameters.

    Selects the entry's position and the event's bytes for one user's positions in
    ``after + 1 .. upto``, in position order, at most ``limit`` rows; :func:`feed_rows` converts them.
    """
    return (
        "SELECT f.position, e.body FROM feed f JOIN events e ON e.position = f.position "
        f"WHERE f.user_id = {user_id} AND f.position > {after} AND f.position <= {upto} "
        f"ORDER BY f.position LIMIT {limit}"
    )


def feed_rows(rows: Sequence[Sequence[Any]]) -> list[tuple[int, bytes]]:
    """``(position, event bytes)`` from rows selected by :func:`feed_read_query`."""
    return [(int(r[0]), bytes(r[1])) for r in rows]
