"""An in-memory Store: the fake that unit tests run against (same contract, no I/O)."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence

from eventstore.errors import ConcurrencyConflict, IdempotencyKeyReused
from eventstore.events import (
    GENESIS_HASH,
    IdempotencyClaim,
    IdempotencyRecord,
    NewEvent,
    Record,
    build_records,
)
from eventstore.notifier import Notifier
from eventstore.store import AppendResult, Snapshot


class MemoryStore:
    """Keeps the log in lists; appends are atomic because they never await mid-way."""

    def __init__(self) -> None:
        self.notifier = Notifier()
        self._log: list[Record] = []
        self._streams: dict[str, list[Record]] = {}
        self._keys: dict[tuple[str, str], IdempotencyRecord] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._checkpoint = 0

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
        draft_id: str,
        events: Sequence[NewEvent],
        expected_seq: int,
        idempotency: IdempotencyClaim | None = None,
    ) -> AppendResult:
        """Append atomically; see :meth:`eventstore.store.Store.append`."""
        await asyncio.sleep(0)  # behave like a real backend: appends yield to the loop
        if idempotency is not None:
            found = self._keys.get((idempotency.user_id, idempotency.key))
            if found is not None:
                if found.fingerprint != idempotency.fingerprint:
                    raise IdempotencyKeyReused(idempotency.user_id, idempotency.key)
                return AppendResult(records=(), replayed=found)
        stream = self._streams.get(draft_id, [])
        head = len(stream)
        if head != expected_seq:
            raise ConcurrencyConflict(draft_id, expected_seq, head)
        if not events:
            return AppendResult(records=())
        prev_hash = stream[-1].hash if stream else GENESIS_HASH
        records = build_records(draft_id, list(events), head, len(self._log), prev_hash, idempotency)
        self._streams.setdefault(draft_id, []).extend(records)
        self._log.extend(records)
        if idempotency is not None:
            self._keys[(idempotency.user_id, idempotency.key)] = IdempotencyRecord(
                idempotency.user_id, idempotency.key, idempotency.fingerprint, draft_id, head + 1
            )
        self.notifier.publish(records)
        return AppendResult(records=tuple(records))

    async def read(self, draft_id: str, after_seq: int = 0, limit: int | None = None) -> list[Record]:
        """The draft's records after ``after_seq``."""
        stream = self._streams.get(draft_id, [])
        start = max(after_seq, 0)  # a negative index would slice from the end of the list
        end = None if limit is None else start + max(limit, 0)
        return stream[start:end]

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Record]:
        """Every draft's records after ``after_position``."""
        start = max(after_position, 0)
        return self._log[start : start + max(limit, 0)]

    async def read_draft_bodies(self, draft_id: str, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """``(seq, body)`` of the draft's records after ``after_seq``."""
        return [(r.seq, r.body) for r in await self.read(draft_id, after_seq, limit)]

    async def read_bodies(self, after_position: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        """``(position, body)`` after ``after_position``."""
        return [(r.position, r.body) for r in await self.read_all(after_position, limit)]

    async def head(self, draft_id: str) -> int:
        """The draft's last seq."""
        return len(self._streams.get(draft_id, ()))

    async def last_position(self) -> int:
        """The log's last position."""
        return len(self._log)

    async def find_idempotency(self, user_id: str, key: str) -> IdempotencyRecord | None:
        """The append that first used the key."""
        return self._keys.get((user_id, key))

    async def load_snapshot(self, draft_id: str) -> Snapshot | None:
        """The stored projection of a draft."""
        return self._snapshots.get(draft_id)

    async def list_snapshots(self, after_draft_id: str = "", limit: int = 1000) -> list[Snapshot]:
        """Stored projections ordered by draft id."""
        ids = sorted(self._snapshots)
        start = bisect.bisect_right(ids, after_draft_id)
        return [self._snapshots[i] for i in ids[start : start + limit]]

    async def save_snapshots(self, snapshots: Sequence[Snapshot], checkpoint: int) -> None:
        """Store projections, never going back in seq."""
        for snap in snapshots:
            old = self._snapshots.get(snap.draft_id)
            if old is None or old.seq <= snap.seq:
                self._snapshots[snap.draft_id] = snap
        self._checkpoint = max(self._checkpoint, checkpoint)

    async def snapshot_checkpoint(self) -> int:
        """The saved checkpoint."""
        return self._checkpoint

    async def reset_snapshots(self) -> None:
        """Forget every projection."""
        self._snapshots.clear()
        self._checkpoint = 0
