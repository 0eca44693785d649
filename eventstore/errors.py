"""Errors raised by the event store.

    StoreError
    ├── ConcurrencyConflict      the stream's head is not the seq the append expected
    ├── IdempotencyKeyReused     a user's idempotency key was used before for another request
    ├── StoreUnavailable         the storage cannot be reached or written (disk full, locked, read-only…)
    └── LogCorrupted             the log breaks an invariant (found by verify or on read)

Lower-layer errors (sqlite3, asyncpg, OSError) are always re-raised as one of these with
``raise … from e`` so that callers never see a backend's own exceptions.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error raised by :mod:`eventstore`."""


class ConcurrencyConflict(StoreError):
    """The draft's head seq differs from the seq the append expected; nothing was written."""

    def __init__(self, draft_id: str, expected_seq: int, actual_seq: int) -> None:
        super().__init__(f"draft {draft_id!r}: expected head seq {expected_seq}, found {actual_seq}")
        self.draft_id = draft_id
        self.expected_seq = expected_seq
        self.actual_seq = actual_seq


class IdempotencyKeyReused(StoreError):
    """The (user, key) pair was already used for a request with another fingerprint."""

    def __init__(self, user_id: str, key: str) -> None:
        super().__init__(f"idempotency key {key!r} of user {user_id!r} was used for another request")
        self.user_id = user_id
        self.key = key


class StoreUnavailable(StoreError):
    """The storage could not be read or written; the operation had no effect."""


class LogCorrupted(StoreError):
    """The log breaks one of its invariants (seq contiguity, position, hash chain)."""
