"""The bare record copy (``eventstore.copy``): store to store, progress by callback, typed refusals.

Runs with every store as the target (the ``store`` fixture) and an in-memory source; the command
around it (rebuild, verify, messages, exit codes) is tested through the CLI in test_copy.py.
"""

from __future__ import annotations

import pytest

from eventstore import IdempotencyClaim, Store
from eventstore.copy import copy_records, resume_position
from eventstore.errors import TargetDiverges, TargetNotEmpty
from eventstore.memory import MemoryStore
from eventstore.store import BulkImporter
from eventstore.verify import verify_log
from tests.eventstore.helpers import created, segment


async def _source(streams: int = 5, segments: int = 7) -> MemoryStore:
    source = MemoryStore()
    for s in range(streams):
        await source.append(f"s{s}", [created()], 0, IdempotencyClaim("alice", f"k{s}", "fp"))
    for n in range(segments):
        for s in range(streams):
            await source.append(f"s{s}", [segment(position=n + 1)], n + 1)
    return source


async def test_copy_records_moves_the_whole_log_in_batches(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(store, BulkImporter)
    monkeypatch.setattr("eventstore.copy.BATCH", 6)
    source = await _source()
    seen: list[tuple[int, int]] = []
    copied = await copy_records(source, store, progress=lambda done, total: seen.append((done, total)))
    assert copied == 40
    assert [done for done, _ in seen] == [6, 12, 18, 24, 30, 36, 40]
    assert {total for _, total in seen} == {40}
    assert await store.read_all(0, 100) == await source.read_all(0, 100)
    assert await store.find_idempotency("alice", "k3") == await source.find_idempotency("alice", "k3")
    assert (await verify_log(store)).ok


async def test_resume_position_refuses_a_non_empty_or_different_target(store: Store) -> None:
    assert isinstance(store, BulkImporter)
    source = await _source()
    assert await resume_position(source, store) == 0
    await store.import_records(await source.read_all(0, 13))
    with pytest.raises(TargetNotEmpty) as not_empty:
        await resume_position(source, store)
    assert not_empty.value.existing == 13
    assert await resume_position(source, store, force=True) == 13
    assert await copy_records(source, store, after=13) == 27
    assert await store.read_all(0, 100) == await source.read_all(0, 100)

    other = MemoryStore()
    await other.append("zz", [created("zed")], 0)
    with pytest.raises(TargetDiverges) as diverges:
        await resume_position(other, store, force=True)
    assert diverges.value.position == 1
    shorter = await _source(streams=1, segments=1)
    with pytest.raises(TargetDiverges) as differs:
        await resume_position(shorter, store, force=True)
    assert differs.value.position == 2
    prefix = MemoryStore()
    await prefix.import_records(await source.read_all(0, 3))
    with pytest.raises(TargetDiverges) as longer:
        await resume_position(prefix, store, force=True)
    assert longer.value.position is None
