"""Group commit, shared by the SQL backends: many concurrent appends, one transaction per group.

Callers ``submit`` an append and wait. One writer task takes everything pending (up to
``max_group``) and hands the group to the backend's ``commit``, which runs one transaction:
it reads the heads and idempotency keys it needs, calls :func:`plan_group` to decide each
append's outcome, inserts the accepted records and publishes them. Then every caller is resolved.
A ``commit`` that raises fails the whole group (nothing of it was written).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventstore.errors import ConcurrencyConflict, IdempotencyKeyReused, StoreError, StoreUnavailable
from eventstore.events import (
    IdempotencyClaim,
    IdempotencyRecord,
    NewEvent,
    Record,
    build_records,
)
from eventstore.store import AppendResult

log = logging.getLogger(__name__)

Head = tuple[int, bytes]
"""A draft's last seq and the hash of its last record."""


@dataclass(slots=True)
class PendingAppend:
    """One caller's append, waiting for its group's transaction."""

    draft_id: str
    events: Sequence[NewEvent]
    expected_seq: int
    claim: IdempotencyClaim | None
    future: asyncio.Future[AppendResult]
    outcome: AppendResult | StoreError | None = field(default=None)


def plan_group(
    group: Sequence[PendingAppend],
    head_of: Callable[[str], Head],
    claimed: dict[tuple[str, str], IdempotencyRecord],
    last_position: int,
) -> tuple[list[Record], dict[str, Head]]:
    """Decide every append of a group, in order, against heads and keys read in its transaction.

    Sets each item's outcome: records to write, a replay of an earlier append with the same
    key and fingerprint, :class:`IdempotencyKeyReused`, or :class:`ConcurrencyConflict`.
    Appends later in the group see the heads and keys of earlier ones. Returns the records to
    insert (in position order) and the new head of every draft appended to.
    """
    heads: dict[str, Head] = {}
    touched: dict[str, Head] = {}
    out: list[Record] = []
    for item in group:
        claim = item.claim
        if claim is not None:
            found = claimed.get((claim.user_id, claim.key))
            if found is not None:
                if found.fingerprint != claim.fingerprint:
                    item.outcome = IdempotencyKeyReused(claim.user_id, claim.key)
                else:
                    item.outcome = AppendResult(records=(), replayed=found)
                continue
        head = heads.get(item.draft_id)
        if head is None:
            head = heads[item.draft_id] = head_of(item.draft_id)
        seq, prev_hash = head
        if seq != item.expected_seq:
            item.outcome = ConcurrencyConflict(item.draft_id, item.expected_seq, seq)
            continue
        if not item.events:
            item.outcome = AppendResult(records=())
            continue
        records = build_records(item.draft_id, list(item.events), seq, last_position, prev_hash, claim)
        last_position = records[-1].position
        heads[item.draft_id] = touched[item.draft_id] = (records[-1].seq, records[-1].hash)
        if claim is not None:
            claimed[(claim.user_id, claim.key)] = IdempotencyRecord(
                claim.user_id, claim.key, claim.fingerprint, item.draft_id, records[0].seq
            )
        out.extend(records)
        item.outcome = AppendResult(records=tuple(records))
    return out, touched


def record_row(r: Record) -> tuple[Any, ...]:
    """A record as the nine stored columns (position, draft_id, seq, type, body, hash, idem_*)."""
    c = r.idempotency
    return (
        r.position,
        r.draft_id,
        r.seq,
        r.type,
        r.body,
        r.hash,
        c.user_id if c else None,
        c.key if c else None,
        c.fingerprint if c else None,
    )


class GroupCommitter:
    """The bounded queue of pending appends and the one writer task that commits them."""

    def __init__(
        self,
        commit: Callable[[list[PendingAppend]], Awaitable[None]],
        to_store_error: Callable[[BaseException], StoreError],
        *,
        max_group: int = 1000,
        queue_size: int = 10_000,
        name: str = "ringlog-writer",
    ) -> None:
        self._commit = commit
        self._to_store_error = to_store_error
        self.max_group = max_group
        self.name = name
        self._queue: asyncio.Queue[PendingAppend] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        """Start the writer task."""
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    @property
    def pending(self) -> int:
        """Appends queued and not yet taken by the writer."""
        return self._queue.qsize()

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._task is not None and not self._closing

    async def submit(
        self, draft_id: str, events: Sequence[NewEvent], expected_seq: int, claim: IdempotencyClaim | None
    ) -> AppendResult:
        """Queue an append (waiting if the queue is full) and wait for its group's outcome."""
        if not self.running:
            raise StoreUnavailable("the store is closed")
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        await self._queue.put(PendingAppend(draft_id, events, expected_seq, claim, future))
        return await future

    async def stop(self) -> None:
        """Refuse new appends, commit those already queued, stop the task."""
        self._closing = True
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            group = [await self._queue.get()]
            while len(group) < self.max_group and not self._queue.empty():
                group.append(self._queue.get_nowait())
            try:
                await self._commit_and_resolve(group)
            finally:
                for _ in group:
                    self._queue.task_done()

    async def _commit_and_resolve(self, group: list[PendingAppend]) -> None:
        try:
            await self._commit(group)
        except Exception as e:  # never let the writer die: later appends would wait forever
            error = self._to_store_error(e)
            log.error("append transaction failed (%d appends refused): %s", len(group), e)
            for item in group:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        for item in group:
            if item.future.done():
                continue
            if isinstance(item.outcome, StoreError):
                item.future.set_exception(item.outcome)
            elif item.outcome is not None:
                item.future.set_result(item.outcome)
            else:
                item.future.set_exception(StoreUnavailable("the append was not decided"))
