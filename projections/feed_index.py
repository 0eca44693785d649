"""The feed index, kept with the log: who each event concerns, as a table keyed by (user, position).

Serves API.md v2 "The caller's own feed" without scanning the log per request: a read is one
range of the index (``Store.feed_read``) joined to the events' bytes.

* :class:`FeedProjector` **advances** like :class:`~projections.runner.DraftProjector`: it
  reads the global log from its position, folds each draft's summary
  (:class:`~projections.feed.FeedFolder`) and computes the users each event concerns
  (:func:`~projections.feed.concerned_users`, with the members *before* the event). A page
  with entries is written with the new checkpoint in one transaction by ``Store.feed_index``,
  which only writes if the stored checkpoint still lies within the range: on several processes
  (workers sharing a SQLite file, PostgreSQL nodes) every one of them folds, one writes each
  range, and the others see the checkpoint already past it. A page with no entries (segments
  are most of any log) writes nothing: the table is already complete over it. The checkpoint
  is then stored with the next entries, after :data:`CHECKPOINT_EVERY` positions, or at stop.
* The table holds every entry at or below :attr:`~FeedProjector.position` (written, by this
  process or another, or there were none), and readers serve only entries at or below it, so a
  read never misses an entry and a ``last_position`` handed to a client never skips one.
* Read your writes: :meth:`FeedProjector.caught_up` waits (bounded) until the index reaches
  every commit this process has seen published, its own appends included.
* A process that starts at a checkpoint knows no draft's summary: the first event of a draft it
  meets is folded from the draft's snapshot (when it is older than the event) or its log
  (``Store.read`` of that one draft), once per draft.
* :func:`rebuild_feed` writes the whole index again from the log alone, and nothing else.
  ``ringlog rebuild`` (and ``ringlog copy`` on its target) folds the index together with the
  snapshots in one pass instead (:func:`projections.runner.rebuild`), to the same entries.

Owned task: ``ringlog-feed-advance`` (started by :meth:`FeedProjector.start`, cancelled and
awaited by :meth:`FeedProjector.stop`) advances whenever a commit is published, and on failure
logs it and retries with a growing, jittered pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from eventstore.events import Record
from eventstore.store import BodyReader, Store
from projections.advancing import OwnedTasks, advance_when_asked
from projections.feed import Envelope, FeedFolder, storable_users, summary_before
from projections.fold import UNFOLDABLE
from projections.state import DraftState, DraftSummary

log = logging.getLogger(__name__)

PAGE = 2000
"""Log records folded, and index entries written, per transaction."""

CHECKPOINT_EVERY = 10_000
"""Positions without any entry after which the checkpoint is stored anyway (so a restart refolds
at most this many); a page with entries always stores it with them."""

STOP_SAVE_SECONDS = 2.0
"""How long :meth:`FeedProjector.stop` tries to store the checkpoint of a range without entries."""

READ_YOUR_WRITES_SECONDS = 2.0
"""How long a feed read or subscription waits for the index to cover this process's latest
commit (:meth:`FeedProjector.caught_up`) before answering with what is indexed."""


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One entry of a user's feed: the event's global ``position`` and its JSON ``body`` (bytes)."""

    position: int
    body: bytes


FeedListener = Callable[[int, Sequence[FeedItem]], None]
"""``listener(upto, items)``: the index advanced to ``upto``; ``items`` are the listener's user's
new entries (position order, possibly none). Called synchronously; must not block or raise."""


class FeedProjector:
    """Keeps the feed index current with the log and wakes its readers (one per process).

    Readers: :meth:`read` (a page at or below :attr:`position`), :meth:`wait_for` (long-poll),
    :meth:`add_listener` (live subscriptions, :class:`server.feed_subscription.FeedSubscription`).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._folder = FeedFolder()
        self._position = 0
        self._stored = 0  # a checkpoint known to be stored (the stored one is at least this)
        self._seen = 0
        self._pending: list[Record] = []  # published records not yet folded (contiguous)
        self._must_read = True  # read the log until it is empty once (start, after a failure)
        self._lock = asyncio.Lock()
        self._wanted = asyncio.Event()
        self._tasks = OwnedTasks("feed")
        self._listeners: dict[str, set[FeedListener]] = {}
        self._progress: list[tuple[int, asyncio.Future[None]]] = []
        self.advance_failures = 0
        """Failed background advances since start (each one logged, then retried)."""

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start at the stored checkpoint, follow commits; the catch-up runs in the background.

        Raises the store's error if the checkpoint cannot be read (nothing is left running).
        An index behind the log (a database from before the feed, or a long stop) is caught up
        by the advance task; reads meanwhile serve what is indexed (``last_position`` says how far).
        """
        self._position = self._stored = await self.store.feed_checkpoint()
        # what the log held at start counts as seen: reads wait (bounded) for it too, and the
        # lag metric shows an initial catch-up
        self._seen = max(self._seen, self._position, await self.store.last_position())
        self.store.notifier.add_global_listener(self._on_commit)
        self._wanted.set()
        self._tasks.spawn(self._advance_loop(), "ringlog-feed-advance")

    @property
    def tasks(self) -> frozenset[asyncio.Task[None]]:
        """The projector's running background tasks."""
        return self._tasks.running

    async def stop(self) -> None:
        """Stop following commits; wake every waiter (they answer with what is indexed)."""
        self.store.notifier.remove_global_listener(self._on_commit)
        await self._tasks.cancel_all()
        if self._position > self._stored:  # a range without entries: store how far it goes
            try:
                await asyncio.wait_for(
                    self.store.feed_index((), min(self._stored, self._position), self._position),
                    STOP_SAVE_SECONDS,
                )
            except Exception:
                log.warning(
                    "could not store the feed checkpoint; the next start folds from the last one",
                    exc_info=True,
                )
        for _, fut in self._progress:
            if not fut.done():
                fut.set_result(None)
        self._progress.clear()

    def _on_commit(self, records: Sequence[Record]) -> None:
        """Notifier callback: keep a contiguous run of published records for the next advance
        (so it need not read them back from the log), and ask for one."""
        self._seen = max(self._seen, records[-1].position)
        pending = self._pending
        if (
            len(pending) < PAGE
            and all(b.position == a.position + 1 for a, b in itertools.pairwise(records))
            and (not pending or records[0].position == pending[-1].position + 1)
        ):
            pending.extend(records)
        else:
            pending.clear()  # the advance reads the log instead
        self._wanted.set()

    def _take_pending(self) -> list[Record] | None:
        """The published records right after :attr:`position`, if they continue it; else None."""
        pending, self._pending = self._pending, []
        fresh = [r for r in pending if r.position > self._position]
        if fresh and fresh[0].position == self._position + 1:
            return fresh
        return None

    async def _advance_loop(self) -> None:
        """Advance whenever asked; a failure is logged and retried after a growing pause."""
        await advance_when_asked(
            self._wanted,
            lambda: self.advance(published_only=True),
            what="feed index",
            position=lambda: self._position,
            failed=self._advance_failed,
        )

    def _advance_failed(self) -> None:
        self.advance_failures += 1

    # -- advancing --------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The global position up to which the index is complete and known here (≤ the stored checkpoint)."""
        return self._position

    @property
    def lag(self) -> int:
        """Positions published to this process that the index has not folded yet (≥ 0)."""
        return max(0, self._seen - self._position)

    async def advance(self, *, published_only: bool = False) -> None:
        """Index every record after :attr:`position` (or learn that another process did).

        ``published_only`` (the background task): stop without reading the log once every
        commit published to this process is folded (the records published are folded as they
        came, when they continue the position). Raises the store's error if the log or the
        index cannot be read or written; what was indexed stays indexed, and the next call
        starts from there.
        """
        async with self._lock:
            if not published_only:
                self._must_read = True
            try:
                while True:
                    self._wanted.clear()
                    page = self._take_pending()
                    if page is None:
                        if not self._must_read and self._position >= self._seen:
                            self._settle()  # every published commit is folded: no read needed
                            return
                        page = await self.store.read_all(self._position, PAGE)
                        if not page:
                            if self._wanted.is_set():
                                continue
                            self._must_read = False
                            self._seen = max(self._seen, self._position)
                            self._settle()
                            return
                    await self._index_page(page)
            except BaseException:
                self._must_read = True
                self._wanted.set()
                raise

    async def _index_page(self, page: Sequence[Record]) -> None:
        upto = page[-1].position
        entries: list[tuple[str, int]] = []
        by_user: dict[str, list[FeedItem]] = {}
        for record in page:
            users = await self._concerned(record)
            for user_id in users:
                entries.append((user_id, record.position))
                by_user.setdefault(user_id, []).append(FeedItem(record.position, record.body))
        if entries or upto - self._stored >= CHECKPOINT_EVERY:
            # all entries at or below our position are in the table (written, or there were
            # none), so the write may start from any stored checkpoint at or above min(...)
            after = min(self._stored, self._position)
            stored = await self.store.feed_index(entries, after, upto)
            if stored < after:
                # the index was reset below us (a rebuild): index again from there
                log.warning("feed index checkpoint went back from %d to %d; indexing again", after, stored)
                self._position = self._stored = stored
                self._folder = FeedFolder()
                self._must_read = True
                return
            self._stored = stored  # upto: we wrote (after, upto]; more: another process had
        # else a range with no entries: nothing to write, the table is complete up to upto as it is
        self._position = upto
        self._publish(upto, by_user)
        self._settle()

    async def _concerned(self, record: Record) -> frozenset[str]:
        if self._folder.skip(record.stream_id, record.seq, record.type):
            return frozenset()  # a segment: concerns nobody, and needs no decoding
        try:
            event = Envelope.of(record.envelope())  # no pydantic model: ~3 µs less per event
            if self._folder.needs(event):
                self._folder.seed(record.stream_id, await self._summary_before(record.stream_id, record.seq))
            return storable_users(self._folder.add(event))
        except UNFOLDABLE:  # breaks the drafts' rules, or a body that is not an event at all
            log.warning(
                "feed index: %s seq %d does not fold; indexed for nobody", record.stream_id, record.seq
            )
            self._folder.seed(record.stream_id, None)
            return frozenset()

    async def _summary_before(self, draft_id: str, seq: int) -> DraftSummary | None:
        """The draft's summary after seq ``seq - 1``: from its snapshot if older, else its log."""
        if seq <= 1:
            return None
        base: DraftSummary | None = None
        snap = await self.store.load_snapshot(draft_id)
        if snap is not None and snap.seq <= seq - 1:
            base = DraftState.from_json(snap.state).summary()
        summary = base
        after = base.seq if base is not None else 0
        while after < seq - 1:  # in chunks, yielding between them: a long draft never stalls the loop
            records = await self.store.read(draft_id, after, min(PAGE, seq - 1 - after))
            if not records:
                break
            summary = summary_before([Envelope.of(r.envelope()) for r in records], summary)
            after = records[-1].seq
            await asyncio.sleep(0)
        return summary

    def _publish(self, upto: int, by_user: dict[str, list[FeedItem]]) -> None:
        for user_id, listeners in list(self._listeners.items()):
            items = by_user.get(user_id, ())
            for listener in tuple(listeners):
                try:
                    listener(upto, items)
                except Exception:
                    log.exception("feed listener of %r failed", user_id)

    def _settle(self) -> None:
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for target, fut in self._progress:
            if fut.done():
                continue
            if self._position >= target:
                fut.set_result(None)
            else:
                keep.append((target, fut))
        self._progress = keep

    # -- reading ----------------------------------------------------------------------------

    async def reached(self, position: int, timeout: float) -> bool:
        """Wait until :attr:`position` ≥ ``position`` (at most ``timeout`` seconds); True if it did."""
        if self._position >= position:
            return True
        if position > self._seen:
            self._must_read = True  # a position not published here yet: look in the log
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._progress.append((position, fut))
        self._wanted.set()
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            pass
        finally:
            if not fut.done():
                fut.cancel()
        return self._position >= position

    async def caught_up(self, timeout: float) -> bool:
        """Read your writes: wait (at most ``timeout`` s) until the index covers every commit this
        process has seen published, its own acknowledged appends included; True if it does."""
        return await self.reached(self._seen, timeout)

    async def read(self, user_id: str, after: int, limit: int) -> tuple[list[FeedItem], int]:
        """The user's entries after ``after`` (at most ``limit``) and the ``last_position`` to resume from.

        ``last_position`` is the last entry's position when the page is full, else
        ``max(after, position)``: every entry concerning the user at or below it has been
        returned (now or before), so resuming after it skips nothing.
        """
        upto = self._position
        rows = await self.store.feed_read(user_id, after, upto, limit)
        items = [FeedItem(p, body) for p, body in rows]
        if len(items) >= limit:
            return items, items[-1].position
        return items, max(after, upto)

    def add_listener(self, user_id: str, listener: FeedListener) -> None:
        """Call ``listener(upto, items)`` after every advance of the index (see :data:`FeedListener`)."""
        self._listeners.setdefault(user_id, set()).add(listener)

    def remove_listener(self, user_id: str, listener: FeedListener) -> None:
        """Stop calling ``listener`` (unknown listeners are ignored)."""
        listeners = self._listeners.get(user_id)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[user_id]

    async def wait_for(
        self, user_id: str, after: int, limit: int, wait: float, stopping: asyncio.Event
    ) -> tuple[list[FeedItem], int]:
        """A long-poll: :meth:`read`, and if it is empty wait up to ``wait`` s for an entry of
        the user's beyond ``after`` (or ``stopping``), then read again.

        Woken only by an advance that indexes an entry for this user, never by others' events.
        """
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def listener(_upto: int, items: Sequence[FeedItem]) -> None:
            if not woken.done() and items and items[-1].position > after:
                woken.set_result(None)

        self.add_listener(user_id, listener)  # before reading: nothing can slip by
        try:
            items, last = await self.read(user_id, after, limit)
            if items:
                return items, last
            stop: asyncio.Task[bool] = loop.create_task(stopping.wait())
            try:
                await asyncio.wait((woken, stop), timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stop
            return await self.read(user_id, after, limit)
        finally:
            self.remove_listener(user_id, listener)
            if not woken.done():
                woken.cancel()


async def rebuild_feed(store: Store, progress: Callable[[int, int], None] | None = None) -> int:
    """Write the whole feed index again from the log alone; returns the entries written.

    Folds every event from its decoded bytes (:class:`~projections.feed.Envelope`), in
    position order, one page per transaction; the checkpoint moves with each page, so a server
    started on a half-rebuilt index continues from where the rebuild stopped.
    """
    await store.reset_feed()
    folder = FeedFolder()
    total = await store.last_position()
    after = 0
    written = 0
    while True:
        if isinstance(store, BodyReader):
            page = await store.read_bodies(after, PAGE)
        else:
            page = [(r.position, r.body) for r in await store.read_all(after, PAGE)]
        if not page:
            break
        entries: list[tuple[str, int]] = []
        for position, body in page:
            try:
                users = storable_users(folder.add_envelope(orjson.loads(body)))
            except UNFOLDABLE:  # breaks the drafts' rules, or a body that is not an event at all
                log.warning("rebuild: the event at position %d does not fold; indexed for nobody", position)
                continue
            entries.extend((user_id, position) for user_id in users)
        upto = page[-1][0]
        await store.feed_index(entries, after, upto)
        written += len(entries)
        after = upto
        if progress is not None:
            progress(after, total)
    return written
