"""Group commit, shared by the SQL backends: many concurrent appends, one transaction per group.

Callers ``submit`` an append and wait. Before anything is queued, the append is checked and its
events serialised (:func:`eventstore.events.encode_bodies`): a value no backend can store fails
that caller alone with :class:`UnrepresentableValue`. One writer task then takes everything
pending (up to ``max_group``) and hands the group to the backend's ``commit``, which runs one
transaction: it reads the heads and idempotency keys it needs, calls :func:`plan_group` to decide
each append's outcome, inserts the accepted records and publishes them. Then every caller is
resolved.

A failed transaction wrote nothing. If the storage itself is unavailable
(:class:`StoreUnavailable`) every append of the group gets that error; any other failure may
have been caused by one append's data, so each append of the group is committed again on its
own, and only an append that fails alone gets the error (one request's bad data never reaches
its neighbours' outcome).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from eventstore.errors import ConcurrencyConflict, IdempotencyKeyReused, StoreError, StoreUnavailable
from eventstore.events import (
    AppendResult,
    IdempotencyClaim,
    IdempotencyRecord,
    NewEvent,
    Record,
    build_records,
    check_claim,
    encode_bodies,
)

log = logging.getLogger(__name__)

Head = tuple[int, bytes]
"""A stream's last seq and the hash of its last record."""


@dataclass(slots=True)
class PendingAppend:
    """One caller's append, checked and serialised, waiting for its group's transaction."""

    stream_id: str
    events: Sequence[NewEvent]
    expected_seq: int
    claim: IdempotencyClaim | None
    bodies: tuple[bytes, ...]
    """:func:`encode_bodies` of ``events`` after ``expected_seq``."""
    future: asyncio.Future[AppendResult]
    outcome: AppendResult | StoreError | None = field(default=None)


def prepare_append(
    stream_id: str, events: Sequence[NewEvent], expected_seq: int, claim: IdempotencyClaim | None
) -> tuple[bytes, ...]:
    """Check an append's text and serialise its events; raises :class:`UnrepresentableValue`."""
    check_claim(claim)
    return encode_bodies(stream_id, events, expected_seq)


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
    insert (in position order) and the new head of every stream appended to.
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
        head = heads.get(item.stream_id)
        if head is None:
            head = heads[item.stream_id] = head_of(item.stream_id)
        seq, prev_hash = head
        if seq != item.expected_seq:
            item.outcome = ConcurrencyConflict(item.stream_id, item.expected_seq, seq)
            continue
        if not item.events:
            item.outcome = AppendResult(records=())
            continue
        records = build_records(
            item.stream_id, item.events, seq, last_position, prev_hash, claim, item.bodies
        )
        last_position = records[-1].position
        heads[item.stream_id] = touched[item.stream_id] = (records[-1].seq, records[-1].hash)
        if claim is not None:
            claimed[(claim.user_id, claim.key)] = IdempotencyRecord(
                claim.user_id, claim.key, claim.fingerprint, item.stream_id, records[0].seq
            )
        out.extend(records)
        item.outcome = AppendResult(tuple(records))
    return out, touched


class GroupCommitter:
    """The bounded queue of pending appends and the one writer task that commits them.

    ``commit(group)`` runs one transaction for the group and raises a :class:`StoreError`
    (mapped by the backend's one error mapping) if it wrote nothing; any other exception is a
    bug and is reported to the callers as :class:`StoreUnavailable`.
    """

    def __init__(
        self,
        commit: Callable[[list[PendingAppend]], Awaitable[None]],
        *,
        max_group: int = 1000,
        queue_size: int = 10_000,
        name: str = "ringlog-writer",
    ) -> None:
        self._commit = commit
        self.max_group = max_group
        self.name = name
        self._queue: asyncio.Queue[PendingAppend] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._in_flight = 0

    def start(self) -> None:
        """Start the writer task."""
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name=self.name)

    @property
    def pending(self) -> int:
        """Appends queued and not yet taken by the writer."""
        return self._queue.qsize()

    @property
    def in_flight(self) -> int:
        """Appends queued or in a transaction, whose callers have not been answered yet."""
        return self._in_flight

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._task is not None and not self._closing

    async def submit(
        self, stream_id: str, events: Sequence[NewEvent], expected_seq: int, claim: IdempotencyClaim | None
    ) -> AppendResult:
        """Check and serialise an append, queue it (waiting if the queue is full), await its outcome.

        Raises :class:`UnrepresentableValue` without queueing anything if a value of the append
        cannot be stored; otherwise the outcome :func:`plan_group` decided, or the error of the
        transaction that failed for this append.
        """
        loop = self._loop
        if loop is None or not self.running:
            raise StoreUnavailable("the store is closed")
        bodies = prepare_append(stream_id, events, expected_seq, claim)
        # the loop the writer runs on, kept by start(): asyncio.get_running_loop() is a getpid()
        # system call on CPython 3.11, one per append (docs/BENCHMARKS.md, "Issue 16: store appends")
        future: asyncio.Future[AppendResult] = loop.create_future()
        self._in_flight += 1
        try:
            item = PendingAppend(stream_id, events, expected_seq, claim, bodies, future)
            if self._queue.full():
                await self._queue.put(item)  # back-pressure: wait for room
            else:
                self._queue.put_nowait(item)  # no coroutine object for the common case
            return await future
        finally:
            self._in_flight -= 1

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

    async def _try_commit(self, group: list[PendingAppend]) -> tuple[StoreError | None, bool]:
        """Commit ``group``: the error that made it write nothing (or None), and whether one of
        its appends may have caused it (anything but the storage being unavailable)."""
        try:
            await self._commit(group)
        except StoreUnavailable as e:
            return e, False
        except StoreError as e:
            return e, True
        except Exception as e:  # never let the writer die: later appends would wait forever
            log.exception("append transaction failed unexpectedly")
            return StoreUnavailable(f"append failed unexpectedly: {type(e).__name__}"), True
        return None, False

    async def _commit_and_resolve(self, group: list[PendingAppend]) -> None:
        error, maybe_one_append = await self._try_commit(group)
        if error is not None:
            for item in group:
                item.outcome = error
            if len(group) > 1 and maybe_one_append:
                log.warning(
                    "append transaction of %d appends failed (%r); committing them one by one",
                    len(group),
                    str(error),
                )
                for item in group:
                    item.outcome = None
                    single, _ = await self._try_commit([item])
                    if single is not None:
                        item.outcome = single
            else:
                log.error("append transaction failed (%d appends refused): %r", len(group), str(error))
        for item in group:
            if item.future.done():
                continue
            if isinstance(item.outcome, StoreError):
                item.future.set_exception(item.outcome)
            elif item.outcome is not None:
                item.future.set_result(item.outcome)
            else:
                item.future.set_exception(StoreUnavailable("the append was not decided"))
