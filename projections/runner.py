"""The projector: keeps every draft's state materialised from the log.

* Current state of a draft = its snapshot (if any) + the log's events after the snapshot's seq.
  Recent states are cached in memory; the log stays the truth, so a cache entry is used only
  when its seq equals the draft's known head (single-writer stores, kept current by the
  notifier before an append returns) or after reading the log's tail (shared stores).
* A summary of every draft (title, seq, members) is kept for listing and is caught up from
  the global log by position, with a checkpoint.
* Snapshots of drafts that changed are saved periodically with the checkpoint up to which
  they are complete; ``rebuild`` recomputes all of them from the log alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence

import orjson

from eventstore.events import Record
from eventstore.store import BodyReader, Snapshot, Store
from projections.fold import FoldError, LogFolder, fold_all, fold_summary
from projections.state import DraftState, DraftSummary

log = logging.getLogger(__name__)

PAGE = 5000

SNAPSHOT_BATCH = 1000
SNAPSHOT_BATCH_BYTES = 2 << 20
"""A rebuild writes snapshots in batches of at most this many drafts or (about) bytes."""


class DraftProjector:
    """Materialised draft states and summaries, caught up from a Store."""

    def __init__(self, store: Store, *, cache_size: int = 10_000, flush_interval: float = 5.0) -> None:
        self.store = store
        self.cache_size = cache_size
        self.flush_interval = flush_interval
        self._cache: OrderedDict[str, DraftState] = OrderedDict()
        self._summaries: dict[str, DraftSummary] = {}
        self._by_member: dict[str, set[str]] = {}
        self._position = 0
        self._dirty: set[str] = set()
        self._catch_up_lock = asyncio.Lock()
        self._catch_up_task: asyncio.Task[None] | None = None
        self._catch_up_wanted = False
        self._flusher: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load summaries from snapshots, catch up from the checkpoint, follow new commits."""
        self._position = await self.store.snapshot_checkpoint()
        after = ""
        while True:
            page = await self.store.list_snapshots(after, 1000)
            if not page:
                break
            for snap in page:
                state = DraftState.from_json(snap.state)
                self._set_summary(state.summary())
            after = page[-1].draft_id
        self.store.notifier.add_global_listener(self._on_commit)
        await self.catch_up()
        if self.flush_interval > 0:
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_loop(), name="ringlog-snapshots"
            )

    async def stop(self) -> None:
        """Stop following the log and save the snapshots of drafts that changed."""
        self.store.notifier.remove_global_listener(self._on_commit)
        for task in (self._flusher, self._catch_up_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._flusher = self._catch_up_task = None
        try:
            await self.flush()
        except Exception:  # the snapshots are derived data: losing them loses nothing
            log.exception("could not save snapshots on stop")

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
            except Exception:
                log.warning("could not save snapshots; will retry", exc_info=True)

    # -- reading ----------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The global position up to which summaries are current."""
        return self._position

    def known_head(self, draft_id: str) -> int:
        """The draft's seq as far as this projector knows (0 if unknown)."""
        summary = self._summaries.get(draft_id)
        return summary.seq if summary is not None else 0

    def cached(self, draft_id: str, seq: int) -> DraftState | None:
        """The cached state of the draft if it is exactly at ``seq`` (no I/O)."""
        state = self._cache.get(draft_id)
        return state if state is not None and state.seq == seq else None

    async def get(self, draft_id: str) -> DraftState | None:
        """The draft's current state, or None if it does not exist."""
        cached = self._cache.get(draft_id)
        if cached is not None:
            self._cache.move_to_end(draft_id)
            if not self.store.is_shared and cached.seq >= self.known_head(draft_id):
                return cached
        base = cached
        if base is None:
            snap = await self.store.load_snapshot(draft_id)
            base = DraftState.from_json(snap.state) if snap is not None else None
        records = await self.store.read(draft_id, after_seq=base.seq if base is not None else 0)
        state = fold_all(base, [r.event() for r in records]) if records else base
        if state is not None:
            self._remember(state)
        return state

    async def state_at(self, draft_id: str, seq: int) -> DraftState | None:
        """The draft's state as of ``seq``, folded from the log alone."""
        records = await self.store.read(draft_id, after_seq=0, limit=seq)
        return fold_all(None, [r.event() for r in records])

    async def drafts_for(self, user_id: str) -> list[DraftSummary]:
        """Drafts ``user_id`` may view, most recently updated first."""
        await self.catch_up()
        ids = self._by_member.get(user_id, ())
        rows = [self._summaries[i] for i in ids]
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

    def _set_summary(self, summary: DraftSummary) -> None:
        old = self._summaries.get(summary.id)
        self._summaries[summary.id] = summary
        if old is None or old.members != summary.members:
            for member in summary.members:
                self._by_member.setdefault(member, set()).add(summary.id)

    def _on_commit(self, records: Sequence[Record]) -> None:
        """Notifier callback, run right after a commit, before the append returns.

        Each draft's summary and cached state advance at once (by seq, so applying a record
        twice is harmless); the global position advances only over a contiguous run, otherwise
        the log is read from the position to fill what was missed.
        """
        in_step = True
        for record in records:
            in_step = self._apply_to_draft(record) and in_step
        contiguous = all(b.position == a.position + 1 for a, b in itertools.pairwise(records))
        if (
            in_step
            and contiguous
            and not self._catch_up_lock.locked()
            and records[0].position == self._position + 1
        ):
            self._position = records[-1].position
        else:
            self._schedule_catch_up()

    def _apply_to_draft(self, record: Record) -> bool:
        """Fold ``record`` into its draft's summary and cached state; False if out of step."""
        summary = self._summaries.get(record.draft_id)
        known = summary.seq if summary is not None else 0
        if record.seq <= known:
            return True  # already reflected
        if record.seq != known + 1:
            return False
        event = record.event()
        try:
            self._set_summary(fold_summary(summary, event))
        except FoldError:
            return False
        cached = self._cache.get(record.draft_id)
        if cached is not None:
            if record.seq == cached.seq + 1:
                self._cache[record.draft_id] = fold_all(cached, (event,)) or cached
            elif record.seq > cached.seq + 1:
                del self._cache[record.draft_id]
        self._dirty.add(record.draft_id)
        return True

    def _schedule_catch_up(self) -> None:
        self._catch_up_wanted = True
        if self._catch_up_task is None or self._catch_up_task.done():
            self._catch_up_task = asyncio.get_running_loop().create_task(self.catch_up())

    async def catch_up(self) -> None:
        """Apply every record after the projector's position, reading the global log."""
        async with self._catch_up_lock:
            while True:
                self._catch_up_wanted = False
                page = await self.store.read_all(self._position, PAGE)
                if not page and not self._catch_up_wanted:
                    return
                for record in page:
                    if not self._apply_to_draft(record):
                        await self._reload_summary(record)
                    self._position = record.position

    async def _reload_summary(self, record: Record) -> None:
        self._cache.pop(record.draft_id, None)
        state = await self.get(record.draft_id)
        if state is not None:
            self._set_summary(state.summary())
        self._dirty.add(record.draft_id)

    async def flush(self) -> None:
        """Save snapshots of the drafts that changed, with the checkpoint they are complete to."""
        if not self._dirty:
            return
        checkpoint = self._position
        dirty, self._dirty = self._dirty, set()
        try:
            snaps: list[Snapshot] = []
            for draft_id in dirty:
                state = await self.get(draft_id)
                if state is not None:
                    snaps.append(Snapshot(draft_id, state.seq, state.to_json()))
            await self.store.save_snapshots(snaps, checkpoint)
        except BaseException:
            self._dirty |= dirty
            raise


async def rebuild(store: Store, progress: Callable[[int, int], None] | None = None) -> int:
    """Recompute every draft's snapshot from the log alone; returns the events folded.

    The log is read page by page, the next page being fetched while this one is folded, and
    each event is folded from its decoded bytes (no model per event). Dropping the old
    snapshots overlaps the fold, and each batch of new ones is written while the next is
    serialised: snapshots are derived data, so a rebuild that fails half-way leaves at worst
    fewer of them, and a projector then folds from the log.
    """
    total = await store.last_position()
    with _collector_paused():
        reset = asyncio.ensure_future(store.reset_snapshots())
        try:
            folder = await _fold_whole_log(store, total, progress)
        finally:
            await reset
        await _save_states(store, folder)
        count = folder.count
        del folder  # freed while paused, so the collector never walks what the fold built
    return count


async def _save_states(store: Store, folder: LogFolder) -> None:
    saving: asyncio.Future[None] | None = None
    batch: list[Snapshot] = []
    size = 0
    for draft_id, state in folder.states().items():
        snap = Snapshot(draft_id, state.seq, state.to_json())
        batch.append(snap)
        size += len(snap.state)
        if len(batch) >= SNAPSHOT_BATCH or size >= SNAPSHOT_BATCH_BYTES:
            if saving is not None:
                await saving
            saving = asyncio.ensure_future(store.save_snapshots(batch, 0))
            batch, size = [], 0
    if saving is not None:
        await saving
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


async def _fold_whole_log(store: Store, total: int, progress: Callable[[int, int], None] | None) -> LogFolder:
    folder = LogFolder()
    add, loads = folder.add_envelope, orjson.loads
    read = store.read_bodies if isinstance(store, BodyReader) else _bodies_of(store)
    after = 0
    pending: asyncio.Future[list[tuple[int, bytes]]] = asyncio.ensure_future(read(0, PAGE))
    try:
        while True:
            page = await pending
            if not page:
                break
            after = page[-1][0]
            pending = asyncio.ensure_future(read(after, PAGE))
            for _, body in page:
                add(loads(body))
            if progress is not None:
                progress(folder.count, total)
    finally:
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
    folder.position = after
    return folder


def _bodies_of(store: Store) -> Callable[[int, int], Awaitable[list[tuple[int, bytes]]]]:
    async def read(after_position: int, limit: int) -> list[tuple[int, bytes]]:
        return [(r.position, r.body) for r in await store.read_all(after_position, limit)]

    return read
