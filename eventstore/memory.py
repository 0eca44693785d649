"""An in-memory Store: the fake that unit tests run against (same contract, no I/O).

It applies the same value rules as the SQL backends (:mod:`eventstore.values`), so a test that
passes on it does not pass only because memory takes what a database refuses.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence

from eventstore.errors import ConcurrencyConflict, IdempotencyKeyReused
from eventstore.events import (
    GENESIS_HASH,
    AppendResult,
    IdempotencyClaim,
    IdempotencyRecord,
    NewEvent,
    Record,
    Snapshot,
    build_records,
    check_continues,
    check_feed_entries,
)
from eventstore.groupcommit import prepare_append
from eventstore.notifier import Notifier
from eventstore.peerbus import PeerBus
from eventstore.values import INT64_MAX, check_text, clamp_int64, is_storable_text, read_limit


class MemoryStore:
    """Keeps the log in lists; appends are atomic because they never await mid-way."""

    def __init__(self) -> None:
        self.notifier = Notifier()
        self.peer_bus = PeerBus()
        """A local peer bus: a memory store has no other process to talk to."""
        self._log: list[Record] = []
        self._streams: dict[str, list[Record]] = {}
        self._keys: dict[tuple[str, str], IdempotencyRecord] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._checkpoint = 0
        self._feed: dict[str, list[int]] = {}
        self._feed_checkpoint = 0

    @property
    def is_shared(self) -> bool:
        """An in-memory log has a single writer: this object."""
        return False

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_seq: int,
        idempotency: IdempotencyClaim | None = None,
    ) -> AppendResult:
        """Append atomically; see :meth:`eventstore.store.Store.append`."""
        bodies = prepare_append(stream_id, events, expected_seq, idempotency)
        await asyncio.sleep(0)  # behave like a real backend: appends yield to the loop
        if idempotency is not None:
            found = self._keys.get((idempotency.user_id, idempotency.key))
            if found is not None:
                if found.fingerprint != idempotency.fingerprint:
                    raise IdempotencyKeyReused(idempotency.user_id, idempotency.key)
                return AppendResult(records=(), replayed=found)
        stream = self._streams.get(stream_id, [])
        head = len(stream)
        if head != expected_seq:
            raise ConcurrencyConflict(stream_id, expected_seq, head)
        if not events:
            return AppendResult(records=())
        prev_hash = stream[-1].hash if stream else GENESIS_HASH
        records = build_records(stream_id, events, head, len(self._log), prev_hash, idempotency, bodies)
        self._insert(records)
        self.notifier.publish(records)
        return AppendResult(records=tuple(records))

    def _insert(self, records: Sequence[Record]) -> None:
        for record in records:
            self._streams.setdefault(record.stream_id, []).append(record)
            self._log.append(record)
            claim = record.idempotency
            if claim is not None:
                self._keys[(claim.user_id, claim.key)] = IdempotencyRecord(
                    claim.user_id, claim.key, claim.fingerprint, record.stream_id, record.seq
                )

    async def import_records(self, records: Sequence[Record]) -> None:
        """Insert already-built records as they are; see :class:`eventstore.store.BulkImporter`."""
        ordered = sorted(records, key=lambda r: r.position)

        def head_of(stream_id: str) -> tuple[int, bytes]:
            stream = self._streams.get(stream_id)
            return (stream[-1].seq, stream[-1].hash) if stream else (0, GENESIS_HASH)

        check_continues(ordered, head_of, len(self._log))
        self._insert(ordered)
        self.notifier.publish(ordered)

    async def read(self, stream_id: str, after_seq: int = 0, limit: int | None = None) -> list[Record]:
        """The stream's records after ``after_seq``."""
        if not is_storable_text(stream_id):
            return []
        stream = self._streams.get(stream_id, [])
        start = min(max(clamp_int64(after_seq), 0), INT64_MAX)  # a negative index would slice from the end
        bounded = read_limit(limit)
        end = None if bounded is None else start + bounded
        return stream[start:end]

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Record]:
        """Every stream's records after ``after_position``."""
        start = max(clamp_int64(after_position), 0)
        bounded = read_limit(limit)
        return self._log[start : None if bounded is None else start + bounded]

    async def read_stream_bodies(self, stream_id: str, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """``(seq, body)`` of the stream's records after ``after_seq``."""
        return [(r.seq, r.body) for r in await self.read(stream_id, after_seq, limit)]

    async def read_bodies(self, after_position: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        """``(position, body)`` after ``after_position``."""
        return [(r.position, r.body) for r in await self.read_all(after_position, limit)]

    async def head(self, stream_id: str) -> int:
        """The stream's last seq."""
        return len(self._streams.get(stream_id, ()))

    async def last_position(self) -> int:
        """The log's last position."""
        return len(self._log)

    async def find_idempotency(self, user_id: str, key: str) -> IdempotencyRecord | None:
        """The append that first used the key."""
        return self._keys.get((user_id, key))

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """The stored projection of a stream."""
        return self._snapshots.get(stream_id)

    async def list_snapshots(self, after_stream_id: str = "", limit: int = 1000) -> list[Snapshot]:
        """Stored projections ordered by stream id."""
        check_text("stream id", after_stream_id)
        ids = sorted(self._snapshots)
        start = bisect.bisect_right(ids, after_stream_id)
        bounded = read_limit(limit)
        return [self._snapshots[i] for i in ids[start : None if bounded is None else start + bounded]]

    async def save_snapshots(self, snapshots: Sequence[Snapshot], checkpoint: int) -> None:
        """Store projections, never going back in seq."""
        for snap in snapshots:
            check_text("stream id", snap.stream_id)
        for snap in snapshots:
            old = self._snapshots.get(snap.stream_id)
            if old is None or old.seq <= snap.seq:
                self._snapshots[snap.stream_id] = snap
        self._checkpoint = max(self._checkpoint, checkpoint)

    async def snapshot_checkpoint(self) -> int:
        """The saved checkpoint."""
        return self._checkpoint

    async def reset_snapshots(self) -> None:
        """Forget every projection."""
        self._snapshots.clear()
        self._checkpoint = 0

    async def feed_checkpoint(self) -> int:
        """The feed index's checkpoint."""
        return self._feed_checkpoint

    async def feed_index(self, entries: Sequence[tuple[str, int]], after: int, upto: int) -> int:
        """Add entries if the checkpoint lies in ``after .. upto - 1``; see :meth:`eventstore.store.Store.feed_index`."""
        check_feed_entries(entries, after, upto)
        current = self._feed_checkpoint
        if not after <= current < upto:
            return current
        for user_id, position in entries:
            if position > current:
                positions = self._feed.setdefault(user_id, [])
                if not positions or positions[-1] < position:
                    positions.append(position)
                elif position not in positions:
                    bisect.insort(positions, position)
        self._feed_checkpoint = upto
        return upto

    async def feed_read(
        self, user_id: str, after_position: int, upto: int, limit: int
    ) -> list[tuple[int, bytes]]:
        """The user's entries after ``after_position`` up to ``upto``."""
        positions = self._feed.get(user_id, []) if is_storable_text(user_id) else []
        start = bisect.bisect_right(positions, clamp_int64(after_position))
        end = bisect.bisect_right(positions, clamp_int64(upto))
        bounded = read_limit(limit)
        chosen = positions[start:end][: None if bounded is None else max(bounded, 0)]
        return [(p, self._log[p - 1].body) for p in chosen]

    async def reset_feed(self) -> None:
        """Forget the feed index."""
        self._feed.clear()
        self._feed_checkpoint = 0
