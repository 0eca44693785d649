"""The Store protocol every backend implements, and the factory that picks one from a URL.

Backends: :mod:`eventstore.memory` (tests), :mod:`eventstore.sqlite` (the embedded default),
:mod:`eventstore.postgres` (several servers sharing one log). One contract test suite runs
against all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from eventstore.events import IdempotencyClaim, IdempotencyRecord, NewEvent, Record
from eventstore.notifier import Notifier


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The outcome of an append: the records written, or the earlier append a retry matched."""

    records: tuple[Record, ...]
    replayed: IdempotencyRecord | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A materialised projection of one stream as of ``seq`` (opaque bytes to the store)."""

    draft_id: str
    seq: int
    state: bytes


@runtime_checkable
class Store(Protocol):
    """An append-only log of drafts' events.

    Invariants every backend keeps, enforced by its storage where it can be:
    per draft, seqs are 1, 2, 3… with no gap or repeat; globally, positions are 1, 2, 3…;
    records are never updated or deleted; each record's hash links to the previous record of
    its draft.

    A backend may also implement the optional :class:`BulkImporter` (``import_records``).
    """

    notifier: Notifier

    @property
    def is_shared(self) -> bool:
        """True when other processes may append to the same log (caches must check heads)."""
        ...

    async def open(self) -> None:
        """Create or migrate the schema and start the writer."""
        ...

    async def close(self) -> None:
        """Finish in-flight appends, then release every resource."""
        ...

    async def append(
        self,
        draft_id: str,
        events: Sequence[NewEvent],
        expected_seq: int,
        idempotency: IdempotencyClaim | None = None,
    ) -> AppendResult:
        """Append ``events`` after ``expected_seq`` atomically, or raise.

        Raises :class:`ConcurrencyConflict` if the draft's head is not ``expected_seq``
        (``0`` for a new draft), :class:`IdempotencyKeyReused` if the claim's key was used
        with another fingerprint, :class:`StoreUnavailable` if storage failed. If the claim's
        key was used with the same fingerprint, nothing is written and ``replayed`` is set.
        Subscribers are notified before this returns.
        """
        ...

    async def read(self, draft_id: str, after_seq: int = 0, limit: int | None = None) -> list[Record]:
        """The draft's records with ``seq > after_seq``, oldest first."""
        ...

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Record]:
        """Records of every draft with ``position > after_position``, in position order.

        Never skips a record that commits later with a smaller position.
        """
        ...

    async def head(self, draft_id: str) -> int:
        """The draft's last seq, 0 if it has no events."""
        ...

    async def last_position(self) -> int:
        """The log's last global position, 0 if empty."""
        ...

    async def find_idempotency(self, user_id: str, key: str) -> IdempotencyRecord | None:
        """The append that first used ``(user_id, key)``, if any."""
        ...

    async def load_snapshot(self, draft_id: str) -> Snapshot | None:
        """The stored projection of a draft, if one was saved."""
        ...

    async def list_snapshots(self, after_draft_id: str = "", limit: int = 1000) -> list[Snapshot]:
        """Stored projections ordered by draft id, for paging through all of them."""
        ...

    async def save_snapshots(self, snapshots: Sequence[Snapshot], checkpoint: int) -> None:
        """Store projections (never replacing one with an older seq) and the checkpoint.

        ``checkpoint`` is the global position up to which every draft's events are reflected.
        """
        ...

    async def snapshot_checkpoint(self) -> int:
        """The checkpoint saved with the last snapshots, 0 if none."""
        ...

    async def reset_snapshots(self) -> None:
        """Drop every stored projection and the checkpoint (they are derived data)."""
        ...


@runtime_checkable
class BulkImporter(Protocol):
    """Optional for a :class:`Store`: insert already-built records as they are (``ringlog copy``).

    Implemented by the SQLite and PostgreSQL backends. ``import_records`` writes the records with
    their positions, seqs, bodies, hashes and idempotency claims unchanged, in one transaction;
    they must continue the log (next positions and seqs), which the schema checks, so a batch
    that does not is refused whole with :class:`StoreError`. Subscribers are not notified.
    """

    async def import_records(self, records: Sequence[Record]) -> None:
        """Insert ``records`` (in position order) exactly as given, atomically."""
        ...


@runtime_checkable
class BodyReader(Protocol):
    """Optional for a :class:`Store`: page through the whole log's bodies only (rebuilds).

    A rebuild needs each event's bytes in position order and nothing else; fetching just those
    two columns roughly halves its cost on a long log. Stores without it are read through
    :meth:`Store.read_all`.
    """

    async def read_bodies(self, after_position: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        """``(position, body)`` of every record with ``position > after_position``, in position order."""
        ...


@runtime_checkable
class DraftBodyReader(Protocol):
    """Optional for a :class:`Store`: page through one draft's bodies only (WebSocket catch-up).

    A socket catching up needs each event's seq (to resume and to join the live stream) and its
    bytes, nothing else; building a full :class:`Record` per row was the larger part of the
    server's catch-up cost. Stores without it are read through :meth:`Store.read`.
    """

    async def read_draft_bodies(self, draft_id: str, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """``(seq, body)`` of the draft's records with ``seq > after_seq``, oldest first, at most ``limit``."""
        ...


def open_store(url: str, *, synchronous: str = "FULL", pool_size: int = 10) -> Store:
    """Build (not yet open) the backend that ``url`` names.

    ``memory:`` is the in-memory fake; ``postgresql://…`` (or ``postgres://``) is PostgreSQL;
    anything else is an SQLite file path (``sqlite:///path`` also accepted).
    """
    if url == "memory:":
        from eventstore.memory import MemoryStore

        return MemoryStore()
    if url.startswith(("postgresql://", "postgres://")):
        from eventstore.postgres import PostgresStore

        return PostgresStore(url, pool_size=pool_size)
    from eventstore.sqlite import SQLiteStore

    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    return SQLiteStore(path, synchronous=synchronous)
