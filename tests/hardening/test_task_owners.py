"""Kind: every task has an owner that logs, retries or hands its error on (issue 10, item 10).

The projector's background tasks (advancing from the log, saving snapshots) are named, kept,
log their failures and retry; stop() cancels and awaits them and saves the last snapshots.
The store is a fake that fails on purpose; the projector and the app are the real ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from eventstore import LogCorrupted, Record, StoreUnavailable
from eventstore.memory import MemoryStore
from eventstore.notifier import Notifier
from eventstore.store import Snapshot
from projections.decide import AppendSegment, CreateDraft, decide
from projections.fold import fold_all
from projections.runner import DraftProjector
from tests.server.inprocess import running_app

TS = "2026-01-01T00:00:00.000Z"


class FlakyStore(MemoryStore):
    """Global reads fail ``fail_reads`` times with ``error``; snapshot saves ``fail_saves`` times."""

    def __init__(self, error: type[Exception] = StoreUnavailable) -> None:
        super().__init__()
        self.error = error
        self.fail_reads = 0
        self.fail_saves = 0
        self.hang_saves = False
        self.failed_reads = 0
        self.failed_saves = 0
        self.caught_up = asyncio.Event()
        """Set when a global read returns an empty page after a failed one: the reader is done."""
        self.saved = asyncio.Event()

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Record]:
        if self.fail_reads > 0:
            self.fail_reads -= 1
            self.failed_reads += 1
            raise self.error("the log cannot be read right now")
        page = await super().read_all(after_position, limit)
        if not page and self.failed_reads:
            self.caught_up.set()
        return page

    async def save_snapshots(self, snapshots: Sequence[Snapshot], checkpoint: int) -> None:
        if self.hang_saves:
            await asyncio.Event().wait()  # a store that never answers
        if self.fail_saves > 0:
            self.fail_saves -= 1
            self.failed_saves += 1
            raise self.error("snapshots cannot be written right now")
        await super().save_snapshots(snapshots, checkpoint)
        self.saved.set()

    async def append_unheard(self, draft_id: str, user: str, content: str) -> None:
        """An append by another process: committed, but this process is not notified."""
        state = fold_all(None, [r.event() for r in await self.read(draft_id)])
        heard, self.notifier = self.notifier, Notifier()
        try:
            await self.append(
                draft_id, decide(state, AppendSegment(user, content), TS), state.seq if state else 0
            )
        finally:
            self.notifier = heard

    async def append_heard(self, draft_id: str, user: str, content: str) -> None:
        state = fold_all(None, [r.event() for r in await self.read(draft_id)])
        await self.append(
            draft_id, decide(state, AppendSegment(user, content), TS), state.seq if state else 0
        )


async def _draft(store: MemoryStore, draft_id: str = "d1") -> None:
    await store.append(draft_id, decide(None, CreateDraft("alice", draft_id, "T"), TS), 0)


@pytest.mark.parametrize("error", [StoreUnavailable, LogCorrupted, OSError, RuntimeError])
@pytest.mark.parametrize("failures", [1, 3])
async def test_a_failed_advance_is_logged_and_retried(
    error: type[Exception], failures: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="projections.runner")
    store = FlakyStore(error)
    projector = DraftProjector(store, flush_interval=0)
    await projector.start()
    try:
        await _draft(store)
        await store.append_unheard("d1", "alice", "from elsewhere")  # the projector is now out of step
        store.fail_reads = failures
        await store.append_heard("d1", "alice", "heard")  # wakes the advance task, whose reads fail
        await asyncio.wait_for(store.caught_up.wait(), 20)
        assert store.failed_reads == failures
        assert projector.advance_failures == failures
        assert projector.position == await store.last_position() == 3
        assert projector.known_head("d1") == 3
        assert [s.seq for s in await projector.drafts_for("alice")] == [3]
        logged = [r for r in caplog.records if "could not advance" in r.getMessage()]
        assert len(logged) == failures and all(r.exc_info for r in logged)
        assert {t.get_name() for t in projector.tasks} == {"ringlog-projector-advance"}
    finally:
        await projector.stop()


async def test_the_projector_owns_named_tasks_and_stops_them() -> None:
    store = MemoryStore()
    projector = DraftProjector(store, flush_interval=60)
    await projector.start()
    tasks = projector.tasks
    assert {t.get_name() for t in tasks} == {"ringlog-projector-advance", "ringlog-snapshots"}
    assert not any(t.done() for t in tasks)
    await projector.stop()
    assert all(t.done() for t in tasks) and projector.tasks == frozenset()
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert not names & {"ringlog-projector-advance", "ringlog-snapshots"}


async def test_a_failed_periodic_save_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="projections.runner")
    store = FlakyStore()
    projector = DraftProjector(store, flush_interval=0.01)
    await projector.start()
    try:
        store.fail_saves = 2
        await _draft(store)
        await asyncio.wait_for(store.saved.wait(), 20)
        assert store.failed_saves == 2
        snap = await store.load_snapshot("d1")
        assert snap is not None and snap.seq == 1
        assert sum("could not save snapshots" in r.getMessage() for r in caplog.records) == 2
    finally:
        await projector.stop()


@pytest.mark.parametrize("drafts", [1, 4])
async def test_shutdown_saves_the_last_snapshots(drafts: int) -> None:
    store = MemoryStore()
    async with running_app(store) as srv:
        ids = [await srv.create() for _ in range(drafts)]
        for n, d in enumerate(ids):
            for k in range(n + 1):
                assert (await srv.append(d, f"{k}"))[0] == 201
        assert await store.list_snapshots() == []  # the periodic save (5 s) has not run
    snaps = {s.stream_id: s.seq for s in await store.list_snapshots()}
    assert snaps == {d: n + 2 for n, d in enumerate(ids)}
    assert await store.snapshot_checkpoint() == await store.last_position()


@pytest.mark.parametrize("failures", [1, 2])
async def test_shutdown_retries_a_failed_last_save(failures: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="projections.runner")
    store = FlakyStore()
    async with running_app(store) as srv:
        d = await srv.create()
        assert (await srv.append(d))[0] == 201
        store.fail_saves = failures
    snap = await store.load_snapshot(d)
    assert snap is not None and snap.seq == 2
    assert store.failed_saves == failures
    assert sum("retrying" in r.getMessage() for r in caplog.records) == failures


async def test_a_last_save_that_keeps_failing_is_logged_and_shutdown_still_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="projections.runner")
    store = FlakyStore()
    loop = asyncio.get_running_loop()
    async with running_app(store) as srv:
        d = await srv.create()
        srv.state.projector.stop_flush_seconds = 0.3
        store.fail_saves = 10**6
        started = loop.time()
    assert loop.time() - started < 5
    assert await store.load_snapshot(d) is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "could not save the snapshots of 1 drafts" in errors[0].getMessage()


async def test_a_last_save_that_hangs_is_bounded_logged_and_shutdown_still_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="projections.runner")
    store = FlakyStore()
    loop = asyncio.get_running_loop()
    async with running_app(store) as srv:
        d = await srv.create()
        srv.state.projector.stop_flush_seconds = 0.3
        store.hang_saves = True
        started = loop.time()
    assert loop.time() - started < 5
    assert await store.load_snapshot(d) is None
    assert any(r.levelno == logging.ERROR and "could not save" in r.getMessage() for r in caplog.records)
