"""Errors raised by the event store.

    StoreError
    ├── ConcurrencyConflict      the stream's head is not the seq the append expected
    ├── IdempotencyKeyReused     a user's idempotency key was used before for another request
    ├── UnrepresentableValue     a value no backend can store as given (NUL, lone surrogate,
    │                            integer beyond 64 bits, data that is not JSON); the caller's fault
    ├── StoreUnavailable         the storage cannot be reached or written (disk full, locked, read-only…)
    ├── StoreLocked              another process owns this log for writing (a running server, a tool)
    ├── LogCorrupted             the log, or records offered to it, break an invariant (found by
    │                            verify, on read, or when an import does not continue the log)
    └── CopyRefused              ``copy_records`` will not write into this target
        ├── TargetNotEmpty       the target already holds records
        └── TargetDiverges       the target is not a prefix of the source

Lower-layer errors (sqlite3, asyncpg, OSError) are re-raised as one of these with
``raise … from e`` by ONE mapping per backend (``_store_error`` in :mod:`eventstore.sqlite` and
:mod:`eventstore.postgres`), so callers never see a backend's own exceptions and the same fault
has the same domain meaning on every store (a schema refusal is ``LogCorrupted`` on both, a value
the backend cannot bind is ``UnrepresentableValue`` on both, only a storage fault is
``StoreUnavailable``).
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error raised by :mod:`eventstore`."""


class ConcurrencyConflict(StoreError):
    """The stream's head seq differs from the seq the append expected; nothing was written."""

    def __init__(self, stream_id: str, expected_seq: int, actual_seq: int) -> None:
        super().__init__(f"stream {stream_id!r}: expected head seq {expected_seq}, found {actual_seq}")
        self.stream_id = stream_id
        self.expected_seq = expected_seq
        self.actual_seq = actual_seq


class IdempotencyKeyReused(StoreError):
    """The (user, key) pair was already used for a request with another fingerprint."""

    def __init__(self, user_id: str, key: str) -> None:
        super().__init__(f"idempotency key {key!r} of user {user_id!r} was used for another request")
        self.user_id = user_id
        self.key = key


class UnrepresentableValue(StoreError):
    """A value of the append (or import) cannot be stored the same on every backend.

    Raised to the one caller whose value it is, before anything is queued for the shared writer
    (see :mod:`eventstore.values`); nothing was written. ``what`` names the value ("stream id",
    "idempotency key", "event data"…), ``problem`` says what is wrong with it. Neither echoes the
    value itself, which may hold bytes unfit for a log line.
    """

    def __init__(self, what: str, problem: str) -> None:
        super().__init__(f"{what} cannot be stored: {problem}")
        self.what = what
        self.problem = problem


class StoreUnavailable(StoreError):
    """The storage could not be read or written; the operation had no effect."""


class StoreLocked(StoreError):
    """Another process holds the writer lock of this log (see :mod:`eventstore.ownership`)."""

    def __init__(self, path: str, holder: str) -> None:
        super().__init__(f"{path!r} is in use by another ringlog process ({holder}); stop it first")
        self.path = path
        self.holder = holder


class LogCorrupted(StoreError):
    """The log breaks one of its invariants (seq contiguity, position, hash chain).

    Also raised when records offered to the log (``import_records``) would break one: the
    storage refused them and nothing of the batch was written.
    """


class CopyRefused(StoreError):
    """``copy_records`` will not copy into this target; nothing was written."""


class TargetNotEmpty(CopyRefused):
    """The target already holds ``existing`` records (resuming needs ``force``)."""

    def __init__(self, existing: int) -> None:
        super().__init__(
            f"is not empty ({existing} events); refusing to copy into it "
            "(--force resumes an interrupted copy whose events are a prefix of the source)"
        )
        self.existing = existing


class TargetDiverges(CopyRefused):
    """The target's records are not a prefix of the source's, so it is not an interrupted copy."""

    def __init__(self, position: int | None) -> None:
        if position is None:
            message = "has more events than the source"
        else:
            message = f"differs from the source at position {position}; it is not an interrupted copy of this source"
        super().__init__(message)
        self.position = position
