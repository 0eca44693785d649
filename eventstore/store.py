"""The Store protocol every backend implements, and its optional capabilities.

Backends: :mod:`eventstore.memory` (tests), :mod:`eventstore.sqlite` (the embedded default),
:mod:`eventstore.postgres` (several servers sharing one log); :mod:`eventstore.factory` picks
one from a URL. This module imports no backend. One contract test suite
(``tests/eventstore/test_store_contract.py``) runs against all of them.

The log is a set of streams (one per draft), each numbered by ``seq``; ``position`` orders the
whole log. Every method keyed by a stream id, user id or idempotency key answers a value that no
backend can store (:mod:`eventstore.values`) as it answers an unknown one: empty, 0 or None on a
read, :class:`UnrepresentableValue` on a write; never :class:`StoreUnavailable`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from eventstore.events import AppendResult, IdempotencyClaim, IdempotencyRecord, NewEvent, Record, Snapshot
from eventstore.notifier import Notifier
from eventstore.peerbus import PeerBus


@runtime_checkable
class Store(Protocol):
    """An append-only log of streams of events.

    Invariants every backend keeps, enforced by its storage where it can be:
    per stream, seqs are 1, 2, 3… with no gap or repeat; globally, positions are 1, 2, 3…;
    records are never updated or deleted; each record's hash links to the previous record of
    its stream.

    A backend may also implement the optional :class:`BulkImporter` (``import_records``).
    """

    notifier: Notifier

    peer_bus: PeerBus
    """Small best-effort messages to the other processes sharing this log (:mod:`eventstore.peerbus`).

    Per-user limits (and later presence) share their per-process state over it. SQLite sends
    datagrams to the processes serving the same file, PostgreSQL NOTIFYs on its own channel;
    the memory store and an unshared file have a local bus that reaches nobody. The store
    starts it when it opens (heartbeats, a hello) and stops it (a goodbye) when it closes.
    """

    @property
    def is_shared(self) -> bool:
        """True when other processes may append to the same log (caches must check heads).

        Such a store learns of their commits by *commit discovery* (see
        :mod:`eventstore.postgres`) and publishes them to :attr:`notifier` like its own.
        """
        ...

    async def open(self) -> None:
        """Create or migrate the schema and start the writer."""
        ...

    async def close(self) -> None:
        """Finish in-flight appends, then release every resource."""
        ...

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_seq: int,
        idempotency: IdempotencyClaim | None = None,
    ) -> AppendResult:
        """Append ``events`` to ``stream_id`` after ``expected_seq`` atomically, or raise.

        Raises :class:`ConcurrencyConflict` if the stream's head is not ``expected_seq``
        (``0`` for a new stream), :class:`IdempotencyKeyReused` if the claim's key was used
        with another fingerprint, :class:`UnrepresentableValue` (before anything is queued) if
        the stream id, a type, the claim or an event's data cannot be stored,
        :class:`StoreUnavailable` if storage failed. If the claim's key was used with the same
        fingerprint, nothing is written and ``replayed`` is set. Subscribers are notified
        before this returns. Concurrent appends may be committed together (group commit); one
        append's failure never fails another's.
        """
        ...

    async def read(self, stream_id: str, after_seq: int = 0, limit: int | None = None) -> list[Record]:
        """The stream's records with ``seq > after_seq``, oldest first, at most ``limit``.

        Any int is accepted: bounds beyond 64 bits are clamped and a negative ``limit`` reads
        nothing, the same on every backend.
        """
        ...

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Record]:
        """Records of every stream with ``position > after_position``, in position order.

        Never skips a record that commits later with a smaller position.
        """
        ...

    async def head(self, stream_id: str) -> int:
        """The stream's last seq, 0 if it has no events."""
        ...

    async def last_position(self) -> int:
        """The log's last global position, 0 if empty."""
        ...

    async def find_idempotency(self, user_id: str, key: str) -> IdempotencyRecord | None:
        """The append that first used ``(user_id, key)``, if any."""
        ...

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """The stored projection of a stream, if one was saved."""
        ...

    async def list_snapshots(self, after_stream_id: str = "", limit: int = 1000) -> list[Snapshot]:
        """Stored projections ordered by stream id (code point order), for paging through all of them.

        ``after_stream_id`` is a previous page's last id; one no backend can store raises
        :class:`UnrepresentableValue`.
        """
        ...

    async def save_snapshots(self, snapshots: Sequence[Snapshot], checkpoint: int) -> None:
        """Store projections (never replacing one with an older seq) and the checkpoint.

        ``checkpoint`` is the global position up to which every stream's events are reflected.
        """
        ...

    async def snapshot_checkpoint(self) -> int:
        """The checkpoint saved with the last snapshots, 0 if none."""
        ...

    async def reset_snapshots(self) -> None:
        """Drop every stored projection and the checkpoint (they are derived data)."""
        ...

    # -- the feed index (API.md v2 "The caller's own feed"): derived data, like snapshots --

    async def feed_checkpoint(self) -> int:
        """The global position up to which the feed index is complete, 0 if none."""
        ...

    async def feed_index(self, entries: Sequence[tuple[str, int]], after: int, upto: int) -> int:
        """Add ``(user_id, position)`` entries covering positions ``after < p <= upto``; returns the checkpoint.

        Atomically, with the checkpoint ``c`` as stored: when ``after <= c < upto`` the entries
        with a position above ``c`` are inserted (an existing one is left as it is: ON CONFLICT
        DO NOTHING, keyed by ``(user_id, position)``) and the checkpoint becomes ``upto``; else
        nothing is written (another writer covered the range, or the index was reset below
        ``after``). So each position's entries are written by one transaction only, and a
        reader that serves positions ``<=`` the checkpoint never misses an entry. Every entry
        must lie in ``after < position <= upto`` (else ValueError, nothing written);
        :class:`UnrepresentableValue` for a user id no backend can store.
        """
        ...

    async def feed_read(
        self, user_id: str, after_position: int, upto: int, limit: int
    ) -> list[tuple[int, bytes]]:
        """``(position, body)`` of the user's entries with ``after_position < position <= upto``, oldest first, at most ``limit``."""
        ...

    async def reset_feed(self) -> None:
        """Drop every feed entry and the feed checkpoint (``rebuild`` writes them again)."""
        ...


@runtime_checkable
class BulkImporter(Protocol):
    """Optional for a :class:`Store`: insert already-built records as they are (``ringlog copy``).

    Implemented by the SQLite and PostgreSQL backends. ``import_records`` writes the records with
    their positions, seqs, bodies, hashes and idempotency claims unchanged, in one transaction;
    they must continue the log (next positions, next seqs, linked hash chain), which every
    backend checks the same way (:func:`eventstore.events.check_continues`, and the schema again),
    so a batch that does not is refused whole with :class:`LogCorrupted`, and one holding text no
    backend can store with :class:`UnrepresentableValue`. Subscribers are notified after
    the commit, as for an append.
    """

    async def import_records(self, records: Sequence[Record]) -> None:
        """Insert ``records`` (in position order) exactly as given, atomically."""
        ...


@runtime_checkable
class BodyReader(Protocol):
    """Optional for a :class:`Store`: page through the whole log's bodies only (rebuilds).

    A rebuild needs each event's bytes in position order and nothing else; fetching just those
    two columns roughly halves its cost on a long log. Every backend here implements it; other
    stores are read through :meth:`Store.read_all`.
    """

    async def read_bodies(self, after_position: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        """``(position, body)`` of every record with ``position > after_position``, in position order."""
        ...


@runtime_checkable
class SnapshotLeadership(Protocol):
    """Optional for a shared :class:`Store`: whether this process is the one that moves the
    snapshot checkpoint (docs/POSTGRES.md "Snapshots are saved by one node").

    The checkpoint promises that every draft's snapshot reflects all its records at or below it,
    so whoever moves it must save every draft that changed. On a store with several nodes one
    of them leads (PostgreSQL: the holder of an advisory lock on its LISTEN connection); the
    others save only the drafts they hold current states of, and never move the checkpoint.
    Stores without it: every process leads, as on one process.
    """

    @property
    def snapshot_leader(self) -> bool:
        """True while this process holds the lead (it may also be true on two processes for a
        moment after a connection drops: both then save everything, which is safe)."""
        ...


@runtime_checkable
class StreamBodyReader(Protocol):
    """Optional for a :class:`Store`: page through one stream's bodies only (a socket's replay).

    A socket replaying a stream needs each event's seq (to resume and to join the live stream)
    and its bytes, nothing else; building a full :class:`Record` per row was the larger part of
    the server's replay cost. Every backend here implements it; other stores are read through
    :meth:`Store.read`.
    """

    async def read_stream_bodies(self, stream_id: str, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """``(seq, body)`` of the stream's records with ``seq > after_seq``, oldest first, at most ``limit``."""
        ...
