"""The projector: keeps every draft's state materialised from the log.

Vocabulary: the projector **advances** — it reads the global log from its checkpoint position
and folds every record into summaries and cached states (:meth:`DraftProjector.advance`). That
is its own mechanism, distinct from a store *following* other nodes' commits and from a
socket's *catch-up* (the hub replaying a draft's log before going live).

* Current state of a draft = its snapshot (if any) + the log's events after the snapshot's seq.
  Recent states are cached in memory; the log stays the truth, so a cache entry is used only
  when its seq equals the draft's known head (single-writer stores, kept current by the
  notifier before an append returns) or after reading the log's tail (shared stores).
* A summary of every draft (title, seq, members) is kept for listing and is caught up from
  the global log by position, with a checkpoint (advancing).
* Past states (``state_at``, ``GET …?at_seq=N``) are immutable: kept in a bounded LRU
  (:class:`~projections.past.PastStates`), folded from the nearest kept state or snapshot, one
  cold fold at a time, yielding to the event loop every ``FOLD_CHUNK`` events.
* Snapshots of drafts that changed are saved periodically with the checkpoint up to which
  they are complete; ``rebuild`` recomputes all of them from the log alone.

Owned tasks (started by :meth:`DraftProjector.start`, cancelled and awaited by
:meth:`DraftProjector.stop`): ``ringlog-projector-advance`` advances whenever a commit arrived
out of step, and on failure logs it and tries again with a growing, jittered pause;
``ringlog-snapshots`` saves snapshots every ``flush_interval`` and logs a failed save (the
drafts stay dirty for the next round). ``stop`` advances one last time and saves the last
snapshots, retrying for up to ``stop_flush_seconds``, and logs what it could not save.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import orjson

from eventstore.events import Record, Snapshot
from eventstore.store import BodyReader, SnapshotLeadership, Store, StreamBodyReader
from projections.advancing import ADVANCE_RETRY_FIRST, ADVANCE_RETRY_MAX, OwnedTasks, advance_when_asked
from projections.event_types import SUMMARY_TYPES
from projections.feed import Envelope, FeedFolder, storable_users
from projections.fold import UNFOLDABLE, FoldError, LogFolder, SnapshotFolder, fold_all, fold_summary
from projections.past import PastStates
from projections.state import DraftState, DraftSummary

log = logging.getLogger(__name__)


class UnfoldableRecord(FoldError):
    """A record of the global log that the projector cannot fold: the log is sound as far as the
    storage checks it (positions, seqs, and on PostgreSQL the hash chain), but the record's body
    is not an event that can follow its draft — written by hand or by a broken tool, since every
    path through ringlog checks the fold first. ``position``, ``draft_id`` and ``seq`` say which;
    the message says why and what to run. A projector sets that draft aside
    (:meth:`DraftProjector.set_aside`: reads of it raise this error, listings leave it out, its
    later events are skipped) and serves every other draft; ``ringlog rebuild`` stops there
    (exit 1, one line). ``draft_id`` and ``seq`` are None where only the body was at hand (a
    rebuild's pages).
    """

    def __init__(
        self, position: int, cause: BaseException, draft_id: str | None = None, seq: int | None = None
    ) -> None:
        self.position, self.draft_id, self.seq = position, draft_id, seq
        which = f" (draft {draft_id!r}, seq {seq})" if draft_id is not None else ""
        super().__init__(
            f"the event at position {position}{which} cannot be folded ({type(cause).__name__}: "
            f"{cause}); `ringlog verify` checks the whole log, `ringlog log` shows a draft's events"
        )

    @classmethod
    def of(cls, record: Record, cause: BaseException) -> UnfoldableRecord:
        """The error for ``record`` of the global log."""
        return cls(record.position, cause, record.stream_id, record.seq)


PAGE = 5000

FOLD_CHUNK = 500
"""Events a past-state fold (``state_at``) folds between two yields to the event loop."""

PAST_FOLDS = 1
"""Cold past-state folds run at once per process; more wait their turn (none is refused)."""

STOP_FLUSH_SECONDS = 5.0
"""How long :meth:`DraftProjector.stop` keeps retrying to save the last snapshots."""

SNAPSHOT_PIECE = 2000
"""Segments a snapshot encodes between two yields to the event loop (~1 ms, :func:`snapshot_json`)."""

SNAPSHOT_BATCH = 1000
SNAPSHOT_BATCH_BYTES = 16 << 20
"""A rebuild writes snapshots in batches of at most this many drafts or (about) bytes: a batch
is written as soon as the previous one is, with what was serialised meanwhile."""


class DraftProjector:
    """Materialised draft states and summaries, advanced from a Store.

    ``cache_size``: draft states kept in memory; ``flush_interval``: seconds between snapshot
    saves (0: no snapshot task, tests flush by hand); ``stop_flush_seconds``: how long
    :meth:`stop` retries the last save; ``past``: the cache of past states for :meth:`state_at`
    (default: :class:`PastStates` with its default bounds); ``past_folds``: cold past-state
    folds run at once (≥ 1).
    """

    def __init__(
        self,
        store: Store,
        *,
        cache_size: int = 10_000,
        flush_interval: float = 5.0,
        stop_flush_seconds: float = STOP_FLUSH_SECONDS,
        past: PastStates | None = None,
        past_folds: int = PAST_FOLDS,
    ) -> None:
        self.store = store
        self.cache_size = cache_size
        self.flush_interval = flush_interval
        self.stop_flush_seconds = stop_flush_seconds
        self._cache: OrderedDict[str, DraftState] = OrderedDict()
        self._summaries: dict[str, DraftSummary] = {}
        self._by_member: dict[str, set[str]] = {}
        self._position = 0
        self._dirty: set[str] = set()
        self._left_to_leader: set[str] = set()  # changed, not cached here: the snapshot leader saves them
        self._stale_ts: OrderedDict[str, Record] = (
            OrderedDict()
        )  # summaries whose updated_at is this record's ts
        self._advance_lock = asyncio.Lock()
        self.past = past if past is not None else PastStates()
        """Past states kept for :meth:`state_at` (bounded LRU)."""
        self._past_folds = asyncio.Semaphore(past_folds)
        self._advance_wanted = asyncio.Event()
        self._tasks = OwnedTasks("projector")
        self.advance_failures = 0
        """Failed background advances since start (each one logged, then retried)."""
        self._set_aside: dict[str, UnfoldableRecord] = {}

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load summaries from snapshots, advance from the checkpoint, follow new commits.

        Raises the store's error if the snapshots or the log cannot be read (nothing is left
        running then).
        """
        self._position = await self.store.snapshot_checkpoint()
        after = ""
        while True:
            page = await self.store.list_snapshots(after, 1000)
            if not page:
                break
            for snap in page:
                state = DraftState.from_json(snap.state)
                self._set_summary(state.summary())
            after = page[-1].stream_id
        self.store.notifier.add_global_listener(self._on_commit)
        try:
            await self.advance()
        except BaseException:
            self.store.notifier.remove_global_listener(self._on_commit)
            raise
        self._tasks.spawn(self._advance_loop(), "ringlog-projector-advance")
        if self.flush_interval > 0:
            self._tasks.spawn(self._flush_loop(), "ringlog-snapshots")

    @property
    def tasks(self) -> frozenset[asyncio.Task[None]]:
        """The projector's running background tasks (advance, snapshots)."""
        return self._tasks.running

    async def stop(self) -> None:
        """Stop the background tasks, advance one last time and save the last snapshots.

        Never raises for a store failure: snapshots are derived data (the log has everything),
        so what cannot be saved within ``stop_flush_seconds`` is logged and rebuilt from the
        log at the next start.
        """
        await self._tasks.cancel_all()
        try:
            await asyncio.wait_for(self.advance(), self.stop_flush_seconds)
        except Exception:
            log.warning("could not read the log's last records before saving snapshots", exc_info=True)
        await self._last_flush()
        self.store.notifier.remove_global_listener(self._on_commit)

    async def _last_flush(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_flush_seconds
        pause = ADVANCE_RETRY_FIRST
        while True:
            try:
                await asyncio.wait_for(self.flush(), max(0.0, deadline - loop.time()))
                return
            except Exception:
                if loop.time() + pause > deadline:
                    log.exception(
                        "could not save the snapshots of %d drafts on stop; they will be folded "
                        "from the log at the next start",
                        len(self._dirty),
                    )
                    return
                log.warning("could not save snapshots on stop; retrying", exc_info=True)
            await asyncio.sleep(pause)
            pause = min(pause * 2, ADVANCE_RETRY_MAX)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
            except Exception:
                log.warning("could not save snapshots; will retry", exc_info=True)

    async def _advance_loop(self) -> None:
        """Advance whenever asked; a failure is logged and retried after a growing pause."""
        await advance_when_asked(
            self._advance_wanted,
            self.advance,
            what="projector",
            position=lambda: self._position,
            failed=self._advance_failed,
        )

    def _advance_failed(self) -> None:
        self.advance_failures += 1

    # -- reading ----------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The global position up to which summaries are current."""
        return self._position

    @property
    def set_aside(self) -> dict[str, UnfoldableRecord]:
        """Drafts this projector met a record of that it cannot fold (draft id -> the error):
        reads of them raise that error, listings leave them out, their events are skipped. The
        log is not changed; an operator repairs it (``ringlog verify`` names the record)."""
        return dict(self._set_aside)

    def known_head(self, draft_id: str) -> int:
        """The draft's seq as far as this projector knows (0 if unknown)."""
        summary = self._summaries.get(draft_id)
        return summary.seq if summary is not None else 0

    def cached(self, draft_id: str, seq: int) -> DraftState | None:
        """The cached state of the draft if it is exactly at ``seq`` (no I/O)."""
        state = self._cache.get(draft_id)
        return state if state is not None and state.seq == seq else None

    def unverified(self, draft_id: str) -> DraftState | None:
        """The cached state of the draft, without reading the log's tail (no I/O), or None.

        Only for a decision whose append the store checks against the head in the append's own
        transaction (``expected_seq`` = the returned state's seq): if another process appended
        meanwhile the store refuses it with ``ConcurrencyConflict`` and the caller must decide
        again on :meth:`get`. A state is a fold of a prefix of the log, so an append it allowed
        that commits at ``expected_seq`` was decided on the draft's current state. None when the
        draft is not cached, or when a commit of it published here is newer than the cache.
        """
        cached = self._cache.get(draft_id)
        if cached is None or cached.seq < self.known_head(draft_id):
            return None
        self._cache.move_to_end(draft_id)
        return cached

    async def get(self, draft_id: str, at_least: int = 0) -> DraftState | None:
        """The draft's current state, or None if it does not exist.

        ``at_least``: a head the caller learnt from the log (a lost append race reports it); a
        cached state behind it is never returned, the log's tail is read instead. A draft not
        cached here (other nodes' drafts are not folded eagerly, see :meth:`_apply_to_draft`) is
        folded from its snapshot and the log after it, and kept in the cache from then on.
        """
        return await self._current(draft_id, at_least, remember=True)

    async def _current(self, draft_id: str, at_least: int, *, remember: bool) -> DraftState | None:
        aside = self._set_aside.get(draft_id)
        if aside is not None:
            raise aside
        cached = self._cache.get(draft_id)
        if cached is not None:
            self._cache.move_to_end(draft_id)
            if (
                not self.store.is_shared
                and cached.seq >= self.known_head(draft_id)
                and cached.seq >= at_least
            ):
                return cached
        base = cached
        if base is None:
            snap = await self.store.load_snapshot(draft_id)
            base = DraftState.from_json(snap.state) if snap is not None else None
        records = await self.store.read(draft_id, after_seq=base.seq if base is not None else 0)
        try:
            state = fold_all(base, [Envelope.of(r.envelope()) for r in records]) if records else base
        except UNFOLDABLE as e:  # a segment folded lazily (by seq only) until now
            error = _first_unfoldable(base, records, e)
            self._put_aside(error)
            raise error from e
        if state is not None and remember:
            self._remember(state)
        return state

    async def state_at(self, draft_id: str, seq: int) -> DraftState | None:
        """The draft's state as of ``seq`` (≥ 1), folded from the log; None if the draft has no such seq.

        Serves ``GET …?at_seq=N`` (API.md v2 "Time travel over HTTP"), bounded so that any
        number of such reads cannot starve the event loop (sockets, revocations, other requests):

        * past states are immutable, so the answer is kept in :attr:`past` (an LRU bounded in
          entries and approximate bytes, :class:`~projections.past.PastStates`); a repeat is
          served from memory;
        * a cold fold starts from the nearest base at or below ``seq``: a kept past state or the
          draft's stored snapshot, else seq 1 (``fold(state_k, log[k:N]) == fold(log[:N])``,
          tests/projections/test_past.py);
        * at most ``past_folds`` cold folds run at once per process (others wait their turn,
          none is refused), and a fold yields to the loop every ``FOLD_CHUNK`` events.

        Folds the envelopes decoded straight from the log's bytes (``LogFolder.add_envelope``,
        held equal to the fold by tests/projections/test_fold_properties.py) when the store can
        page through one stream's bodies.
        """
        kept = self.past.get(draft_id, seq)
        if kept is not None:
            return kept
        async with self._past_folds:
            kept = self.past.get(draft_id, seq, count=False)  # folded by the request we waited behind
            if kept is not None:
                return kept
            state = await self._fold_to(draft_id, seq, await self._past_base(draft_id, seq))
        if state is not None and state.seq == seq:
            self.past.put(state)
        return state

    async def _past_base(self, draft_id: str, seq: int) -> DraftState | None:
        """The latest known state at or below ``seq``: a kept past state or the stored snapshot."""
        base = self.past.nearest_at_or_below(draft_id, seq)
        snap = await self.store.load_snapshot(draft_id)
        if snap is not None and snap.seq <= seq and (base is None or snap.seq > base.seq):
            base = DraftState.from_json(snap.state)
        return base

    async def _fold_to(self, draft_id: str, seq: int, base: DraftState | None) -> DraftState | None:
        """Fold the draft's events after ``base`` up to ``seq``, yielding every ``FOLD_CHUNK`` events."""
        after = base.seq if base is not None else 0
        if not isinstance(self.store, StreamBodyReader):
            state = base
            while after < seq:
                records = await self.store.read(draft_id, after_seq=after, limit=min(FOLD_CHUNK, seq - after))
                if not records:
                    break
                state = fold_all(state, [r.event() for r in records])
                after = records[-1].seq
                await asyncio.sleep(0)
            return state
        folder = LogFolder()
        if base is not None:
            folder.start_from(base)
        while after < seq:
            page = await self.store.read_stream_bodies(draft_id, after, min(FOLD_CHUNK, seq - after))
            if not page:
                break
            for _, body in page:
                folder.add_envelope(orjson.loads(body))
            after = page[-1][0]
            await asyncio.sleep(0)  # let sockets, revocations and other requests run between chunks
        return folder.states().get(draft_id)

    async def drafts_for(self, user_id: str, *, archived: bool = False) -> list[DraftSummary]:
        """Drafts ``user_id`` may view, most recently updated first: the archived ones when
        ``archived``, else the others (API.md v2)."""
        await self.advance()
        rows = []
        for draft_id in list(self._by_member.get(user_id, ())):
            try:
                row = self._summary(draft_id)
            except UnfoldableRecord as e:  # a lazily folded segment whose body is not an event
                self._put_aside(e)
                continue
            if row.archived == archived:
                rows.append(row)
        rows.sort(key=lambda s: (s.updated_at, s.id), reverse=True)
        return rows

    # -- keeping up ---------------------------------------------------------------------------

    def _remember(self, state: DraftState) -> None:
        old = self._cache.get(state.id)
        if old is not None and old.seq > state.seq:
            return
        self._cache[state.id] = state
        self._cache.move_to_end(state.id)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _summary(self, draft_id: str) -> DraftSummary:
        """The draft's summary, its ``updated_at`` taken from the last record skipped undecoded."""
        summary = self._summaries[draft_id]
        record = self._stale_ts.pop(draft_id, None)
        if record is not None and record.seq == summary.seq:
            try:
                updated_at = orjson.loads(record.body)["ts"]
            except UNFOLDABLE as e:
                raise UnfoldableRecord.of(record, e) from e
            if not isinstance(updated_at, str):
                raise UnfoldableRecord.of(
                    record, TypeError(f"ts is {type(updated_at).__name__}, not a string")
                )
            summary = replace(summary, updated_at=updated_at)
            self._summaries[draft_id] = summary
        return summary

    def _set_summary(self, summary: DraftSummary) -> None:
        self._stale_ts.pop(summary.id, None)
        old = self._summaries.get(summary.id)
        self._summaries[summary.id] = summary
        if old is None or old.members != summary.members:
            for member in summary.members:
                self._by_member.setdefault(member, set()).add(summary.id)
            for gone in old.members - summary.members if old is not None else ():
                drafts = self._by_member.get(gone)
                if drafts is not None:
                    drafts.discard(summary.id)
                    if not drafts:
                        del self._by_member[gone]

    def _on_commit(self, records: Sequence[Record]) -> None:
        """Notifier callback, run right after a commit, before the append returns.

        Each draft's summary and cached state advance at once (by seq, so applying a record
        twice is harmless); the global position advances only over a contiguous run, otherwise
        the log is read from the position to fill what was missed.
        """
        in_step = True
        for record in records:
            try:
                in_step = self._apply_to_draft(record) and in_step
            except UNFOLDABLE as e:  # a row written past ringlog: set aside before anything reads it
                self._put_aside(e if isinstance(e, UnfoldableRecord) else UnfoldableRecord.of(record, e))
        contiguous = all(b.position == a.position + 1 for a, b in itertools.pairwise(records))
        if (
            in_step
            and contiguous
            and not self._advance_lock.locked()
            and records[0].position == self._position + 1
        ):
            self._position = records[-1].position
        else:
            self._advance_wanted.set()  # the advance task reads the log from our position

    def _apply_to_draft(self, record: Record) -> bool:
        """Fold ``record`` into its draft's summary and cached state; False if out of step."""
        if record.stream_id in self._set_aside:
            return True  # its events are skipped (set_aside)
        summary = self._summaries.get(record.stream_id)
        known = summary.seq if summary is not None else 0
        if record.seq <= known:
            return True  # already reflected
        if record.seq != known + 1:
            return False
        cached = self._cache.get(record.stream_id)
        if cached is None and summary is not None and record.type not in SUMMARY_TYPES:
            # a segment of a draft not cached here (typically another node's): its summary
            # moves by seq only, and its updated_at is decoded if a listing asks for it
            self._summaries[record.stream_id] = DraftSummary(
                summary.id, summary.title, record.seq, summary.updated_at, summary.members, summary.archived
            )
            self._stale_ts[record.stream_id] = record
            self._stale_ts.move_to_end(record.stream_id)
            self._dirty.add(record.stream_id)
            if len(self._stale_ts) > self.cache_size:
                try:
                    self._summary(next(iter(self._stale_ts)))  # bounded: the oldest is decoded now
                except UnfoldableRecord as e:  # that oldest draft's, not this record's
                    self._put_aside(e)
            return True
        event = Envelope.of(record.envelope())  # no pydantic model: ~3 µs less per append
        if event.draft_id != record.stream_id or event.seq != record.seq:  # a row written past ringlog
            raise FoldError(f"its body is event {event.seq} of draft {event.draft_id!r}, not this row's")
        try:
            self._set_summary(fold_summary(summary, event))
        except FoldError:
            return False
        if cached is not None:
            if record.seq == cached.seq + 1:
                self._cache[record.stream_id] = fold_all(cached, (event,)) or cached
            elif record.seq > cached.seq + 1:
                del self._cache[record.stream_id]
        self._dirty.add(record.stream_id)
        return True

    async def advance(self) -> None:
        """Fold every record after the projector's position into it, reading the global log.

        Raises the store's error if the log cannot be read; what was folded stays folded. A
        record the fold cannot take sets its draft aside (:attr:`set_aside`, logged once as an
        error) and the projector goes on past it.
        """
        async with self._advance_lock:
            try:
                while True:
                    self._advance_wanted.clear()
                    page = await self.store.read_all(self._position, PAGE)
                    if not page and not self._advance_wanted.is_set():
                        return
                    for record in page:
                        try:
                            if not self._apply_to_draft(record):
                                await self._reload_summary(record)
                        except UNFOLDABLE as e:
                            self._put_aside(
                                e if isinstance(e, UnfoldableRecord) else UnfoldableRecord.of(record, e)
                            )
                        self._position = record.position
            except BaseException:
                self._advance_wanted.set()  # unfinished: the advance task tries again
                raise

    def _put_aside(self, error: UnfoldableRecord) -> None:
        """Set ``error.draft_id`` aside: forget its summary, state and pending snapshot."""
        draft_id = error.draft_id
        if draft_id is None or draft_id in self._set_aside:
            return
        self._set_aside[draft_id] = error
        log.error("draft %r set aside, its reads refused and its events skipped: %s", draft_id, error)
        summary = self._summaries.pop(draft_id, None)
        for member in summary.members if summary is not None else ():
            drafts = self._by_member.get(member)
            if drafts is not None:
                drafts.discard(draft_id)
                if not drafts:
                    del self._by_member[member]
        self._cache.pop(draft_id, None)
        self._stale_ts.pop(draft_id, None)
        self._dirty.discard(draft_id)
        self._left_to_leader.discard(draft_id)

    async def _reload_summary(self, record: Record) -> None:
        self._cache.pop(record.stream_id, None)
        state = await self.get(record.stream_id)
        if state is not None:
            self._set_summary(state.summary())
        self._dirty.add(record.stream_id)

    @property
    def _leads(self) -> bool:
        return not isinstance(self.store, SnapshotLeadership) or self.store.snapshot_leader

    async def flush(self) -> None:
        """Save snapshots of the drafts that changed, with the checkpoint they are complete to.

        On a store with a snapshot leader (:class:`~eventstore.store.SnapshotLeadership`,
        several PostgreSQL nodes) only the leader saves every changed draft and moves the
        checkpoint; another node saves the changed drafts it has cached (their state is at
        hand) with no checkpoint, and leaves the others to the leader (kept, in case it leads
        later). Every process of any other store leads.
        """
        leads = self._leads
        if leads and self._left_to_leader:
            self._dirty |= self._left_to_leader
            self._left_to_leader = set()
        if not self._dirty:
            return
        checkpoint = self._position if leads else 0
        dirty, self._dirty = self._dirty, set()
        left: set[str] = set()
        try:
            snaps: list[Snapshot] = []
            for draft_id in dirty:
                try:
                    if draft_id in self._cache:
                        state = await self.get(draft_id)
                    elif leads:
                        state = await self._current(draft_id, 0, remember=False)  # stays uncached
                    else:
                        left.add(draft_id)
                        continue
                except UnfoldableRecord:
                    continue  # set aside: no snapshot, and the checkpoint moves past it
                if state is not None:
                    snaps.append(Snapshot(draft_id, state.seq, await snapshot_json(state)))
            if snaps or leads:
                await self.store.save_snapshots(snaps, checkpoint)
        except BaseException:
            self._dirty |= dirty
            raise
        self._left_to_leader |= left


def _first_unfoldable(
    base: DraftState | None, records: Sequence[Record], failure: BaseException
) -> UnfoldableRecord:
    """The error naming the first of ``records`` that does not fold onto ``base`` (folded again
    one at a time: only on this error path); the last record and ``failure`` if none alone does."""
    state = base
    for record in records:
        try:
            state = fold_all(state, [Envelope.of(record.envelope())])
        except UNFOLDABLE as e:
            return UnfoldableRecord.of(record, e)
    return UnfoldableRecord.of(records[-1], failure)


async def snapshot_json(state: DraftState, segments_per_piece: int = SNAPSHOT_PIECE) -> bytes:
    """``state.to_json()``, encoded ``segments_per_piece`` segments at a time with a yield to the
    event loop between pieces: a long draft's snapshot never holds the loop for more than ~1 ms.

    Encoding is CPU work under the GIL (orjson holds it), so a thread would not free the loop;
    pieces let sockets and requests run in between. Issue 16: a 100,000-segment draft took ~50 ms
    (hundreds under load) in one call, stalling a catch-up that was running then.
    """
    if len(state.segments) <= segments_per_piece:
        return state.to_json()
    pieces: list[bytes] = []
    for piece in state.json_pieces(segments_per_piece):
        pieces.append(piece)
        await asyncio.sleep(0)
    return b"".join(pieces)


async def rebuild(store: Store, progress: Callable[[int, int], None] | None = None) -> int:
    """Recompute every draft's snapshot and the feed index from the log alone; returns the events folded.

    One pass over the log (:class:`LogRebuild`): each record is read once and decoded once,
    then folded into its draft's state and into the feed index's summaries. The fold waits
    for no write: the next page is fetched while this one is folded; dropping the old
    snapshots and the old index overlaps the first pages; index entries are written in one
    transaction per write, the checkpoint moving with them, each write taking every page
    folded while the previous one ran; the snapshots are written last, likewise each batch
    taking what was serialised while the previous one was written. ``progress(events folded,
    last position)`` is called after each page.

    Both are derived data, so a rebuild that fails half-way leaves a consistent prefix: fewer
    snapshots (a projector then folds from the log), and an index complete up to its stored
    checkpoint (a server continues it from there). Raises the store's error, or
    :class:`~projections.fold.FoldError` if an event does not fold (as the projector would).
    """
    total = await store.last_position()
    with _collector_paused():
        folder = LogRebuild()
        index_written = await _fold_and_index(store, folder, total, progress)
        try:
            await _save_states(store, folder.states)
        finally:
            await index_written  # the last index write, queued before the snapshots
        count = folder.states.count
        del folder  # freed while paused, so the collector never walks what the fold built
    return count


class LogRebuild:
    """What a rebuild folds the log into, in one pass: every draft's state and the feed index.

    :meth:`add_page` takes ``(position, body)`` pages in position order, decodes each body once
    and feeds the envelope to both :class:`~projections.fold.SnapshotFolder` (:attr:`states`) and
    :class:`~projections.feed.FeedFolder` (:attr:`feed`); the result is exactly what folding
    the log through each of them separately gives (tests/projections/test_rebuild_properties.py).
    """

    def __init__(self) -> None:
        self.states = SnapshotFolder()
        self.feed = FeedFolder()

    def add_page(self, page: Sequence[tuple[int, bytes]]) -> list[tuple[str, int]]:
        """Fold a page; returns its feed entries ``(user id, position)`` in position order.

        Raises :class:`UnfoldableRecord` (a :class:`~projections.fold.FoldError` naming the
        position) when the state fold refuses an event or its body is not one, as the projector
        does; the feed part of an event
        it accepted never refuses it (the same rules, ``fold_summary``), and if it ever did the
        event would be indexed for nobody, as :func:`~projections.feed_index.rebuild_feed` does.
        """
        add, feed_add, loads = self.states.add_envelope, self.feed.add_envelope, orjson.loads
        entries: list[tuple[str, int]] = []
        for position, body in page:
            try:
                envelope = loads(body)
                if envelope["ts"].__class__ is not str:  # the one field the fold stores unchecked
                    raise TypeError("not an event envelope: ts must be a string")
                add(envelope)
            except UNFOLDABLE as e:
                raise UnfoldableRecord(position, e) from e
            try:
                users = feed_add(envelope)
            except UNFOLDABLE as e:  # the state fold took it, so it is a row written past ringlog
                raise UnfoldableRecord(position, e) from e
            if users:
                entries.extend((user_id, position) for user_id in storable_users(users))
        if page:
            self.states.position = page[-1][0]
        return entries


FEED_WRITE_MAX = 100_000
"""Index entries at most in one write of a rebuild (the fold waits for the previous write then)."""

FEED_WRITE_MIN = 20_000
"""Positions at least in one index write of a rebuild but the last (a commit costs a sync)."""


async def _fold_and_index(
    store: Store, folder: LogRebuild, total: int, progress: Callable[[int, int], None] | None
) -> asyncio.Future[Any]:
    """Read the whole log once into ``folder``, writing the feed index as it goes.

    Returns the last index write, started but not awaited (the caller's snapshot writes queue
    behind it). A write starts when the previous one is done and ``FEED_WRITE_MIN`` positions
    were folded since, with every entry folded meanwhile, so the fold never waits for a write
    (unless ``FEED_WRITE_MAX`` entries pile up).
    """
    read = store.read_bodies if isinstance(store, BodyReader) else _bodies_of(store)
    resets: asyncio.Future[Any] = asyncio.ensure_future(
        asyncio.gather(store.reset_snapshots(), store.reset_feed())
    )
    writing: asyncio.Future[Any] = resets  # the index is written after the reset, one write at a time
    pending: asyncio.Future[list[tuple[int, bytes]]] = asyncio.ensure_future(read(0, PAGE))
    written = folded = 0  # the index is written up to ``written``, the log folded up to ``folded``
    entries: list[tuple[str, int]] = []
    try:
        while True:
            page = await pending
            if not page:
                break
            folded = page[-1][0]
            pending = asyncio.ensure_future(read(folded, PAGE))
            entries += folder.add_page(page)
            if (writing.done() and folded - written >= FEED_WRITE_MIN) or len(entries) >= FEED_WRITE_MAX:
                await writing
                writing = asyncio.ensure_future(store.feed_index(entries, written, folded))
                entries, written = [], folded
            if progress is not None:
                progress(folder.states.count, total)
        if written < folded:
            await writing
            writing = asyncio.ensure_future(store.feed_index(entries, written, folded))
        else:
            await writing  # the resets, on an empty log
    except BaseException:
        for task in (pending, writing, resets):
            if not task.done():
                if task is pending:
                    task.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await task  # a write in flight is let finish (its thread runs it anyway)
        raise
    return writing


SAVE_POLL_BYTES = 1 << 20
"""A rebuild looks whether the previous snapshot batch is written after serialising about this
many bytes (a draft counts at least 1 KiB), and then writes the next batch if it holds at least
as many: often enough to start the next write early, rarely enough that a log of many small
drafts pays neither a loop turn nor a commit per draft."""


async def _save_states(store: Store, folder: SnapshotFolder) -> None:
    """Serialise and save every state, the checkpoint with the last batch (as in :func:`rebuild`)."""
    saving: asyncio.Future[None] | None = None
    batch: list[Snapshot] = []
    size = unpolled = 0
    try:
        for draft_id, seq, state in folder.snapshots():
            batch.append(Snapshot(draft_id, seq, state))
            size += len(state)
            unpolled += max(len(state), 1024)
            if unpolled >= SAVE_POLL_BYTES:
                await asyncio.sleep(0)  # lets the previous write's completion in
                unpolled = 0
            if (
                ((saving is None or saving.done()) and size >= SAVE_POLL_BYTES)
                or len(batch) >= SNAPSHOT_BATCH
                or size >= SNAPSHOT_BATCH_BYTES
            ):
                if saving is not None:
                    await saving
                saving = asyncio.ensure_future(store.save_snapshots(batch, 0))
                batch, size = [], 0
        if saving is not None:
            await saving
    except BaseException:
        if saving is not None and not saving.done():
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await saving  # a write in flight is let finish (its thread runs it anyway)
        raise
    await store.save_snapshots(batch, folder.position)  # the checkpoint goes with the last batch


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector during a rebuild (an offline tool's batch job).

    A fold keeps about one new object per event (a segment), and serialising the states makes
    as many again, with no cycles among them; yet the collector would walk all of them again
    and again as they pile up, ~20-30% of a rebuild. Nothing is left for it afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _bodies_of(store: Store) -> Callable[[int, int], Awaitable[list[tuple[int, bytes]]]]:
    async def read(after_position: int, limit: int) -> list[tuple[int, bytes]]:
        return [(r.position, r.body) for r in await store.read_all(after_position, limit)]

    return read
