"""The Store contract, run against every backend through the ``store`` fixture."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from eventstore import (
    ConcurrencyConflict,
    IdempotencyClaim,
    IdempotencyKeyReused,
    LogCorrupted,
    Record,
    Snapshot,
    Store,
    UnrepresentableValue,
    open_store,
)
from eventstore.events import GENESIS_HASH, build_records, chain_hash
from eventstore.memory import MemoryStore
from eventstore.store import BodyReader, BulkImporter, StreamBodyReader
from eventstore.verify import verify_log
from tests.eventstore.helpers import TS, append_retrying, created, segment, updated

# -- append, read, heads ---------------------------------------------------------------------


async def test_empty_store(store: Store) -> None:
    assert await store.head("draft_x") == 0
    assert await store.last_position() == 0
    assert await store.read("draft_x") == []
    assert await store.read_all() == []
    assert await store.find_idempotency("alice", "k") is None
    report = await verify_log(store)
    assert report.ok and report.events == 0


async def test_append_assigns_seqs_positions_and_bodies(store: Store) -> None:
    result = await store.append("draft_a", [created(), segment(), updated()], 0)
    assert result.replayed is None
    assert [r.seq for r in result.records] == [1, 2, 3]
    assert [r.position for r in result.records] == [1, 2, 3]
    assert [r.type for r in result.records] == [
        "collab.draft_created",
        "collab.segment_added",
        "collab.draft_updated",
    ]
    first = orjson.loads(result.records[0].body)
    assert first == {
        "type": "collab.draft_created",
        "draft_id": "draft_a",
        "seq": 1,
        "ts": TS,
        "user_id": "alice",
        "data": {"title": "Draft", "description": "", "creator_id": "alice"},
    }
    # the body is the canonical encoding of the decoded event
    for r in result.records:
        assert r.event().canonical_bytes() == r.body
        assert r.envelope() == orjson.loads(r.body)

    assert await store.head("draft_a") == 3
    assert await store.last_position() == 3
    assert await store.read("draft_a") == list(result.records)


async def test_read_after_seq_and_limit(store: Store) -> None:
    await store.append("draft_a", [created(), *[segment(position=i) for i in range(1, 10)]], 0)
    everything = await store.read("draft_a")
    assert [r.seq for r in everything] == list(range(1, 11))
    assert await store.read("draft_a", after_seq=4) == everything[4:]
    assert await store.read("draft_a", after_seq=4, limit=3) == everything[4:7]
    assert await store.read("draft_a", after_seq=10) == []
    assert await store.read("draft_a", after_seq=0, limit=0) == []
    assert await store.read("draft_other") == []
    # "seq > after_seq" holds for any after_seq, even one below the first seq
    assert await store.read("draft_a", after_seq=-3) == everything
    assert await store.read("draft_a", after_seq=-3, limit=2) == everything[:2]


async def test_read_stream_bodies_agrees_with_read(store: Store) -> None:
    assert isinstance(store, StreamBodyReader)  # every backend has the (seq, body) read now
    await store.append("draft_a", [created(), *[segment(position=i) for i in range(1, 10)]], 0)
    await store.append("draft_b", [created()], 0)
    everything = [(r.seq, r.body) for r in await store.read("draft_a")]
    assert await store.read_stream_bodies("draft_a", 0, 100) == everything
    assert await store.read_stream_bodies("draft_a", 4, 3) == everything[4:7]
    assert await store.read_stream_bodies("draft_a", 10, 100) == []
    assert await store.read_stream_bodies("draft_a", 0, 0) == []
    assert await store.read_stream_bodies("draft_other", 0, 100) == []


async def test_read_bodies_agrees_with_read_all(store: Store) -> None:
    assert isinstance(store, BodyReader)  # every backend has the (position, body) read a rebuild uses
    await store.append("draft_a", [created(), *[segment(position=i) for i in range(1, 6)]], 0)
    await store.append("draft_b", [created("bob"), segment("bob")], 0)
    everything = [(r.position, r.body) for r in await store.read_all(0, 100)]
    assert len(everything) == 8
    assert await store.read_bodies(0, 100) == everything
    assert await store.read_bodies(3, 2) == everything[3:5]
    assert await store.read_bodies(8, 100) == []
    assert await store.read_bodies(0, 0) == []


async def test_read_all_interleaves_drafts_in_position_order(store: Store) -> None:
    await store.append("draft_a", [created()], 0)
    await store.append("draft_b", [created("bob")], 0)
    await store.append("draft_a", [segment()], 1)
    await store.append("draft_b", [segment("bob"), updated("bob")], 1)
    records = await store.read_all()
    assert [(r.position, r.stream_id, r.seq) for r in records] == [
        (1, "draft_a", 1),
        (2, "draft_b", 1),
        (3, "draft_a", 2),
        (4, "draft_b", 2),
        (5, "draft_b", 3),
    ]
    assert await store.read_all(after_position=2, limit=2) == records[2:4]
    assert await store.read_all(after_position=5) == []
    assert await store.read_all(after_position=-2, limit=2) == records[:2]
    assert await store.head("draft_a") == 2
    assert await store.head("draft_b") == 3
    assert await store.last_position() == 5


async def test_empty_append_writes_nothing(store: Store) -> None:
    await store.append("draft_a", [created()], 0)
    result = await store.append("draft_a", [], 1)
    assert result.records == () and result.replayed is None
    assert await store.last_position() == 1


# -- optimistic concurrency -------------------------------------------------------------------


async def test_expected_seq_mismatch_raises_and_writes_nothing(store: Store) -> None:
    await store.append("draft_a", [created(), segment()], 0)
    seen: list[Record] = []
    store.notifier.add_global_listener(seen.extend)
    for expected in (0, 1, 3, 7):
        with pytest.raises(ConcurrencyConflict) as info:
            await store.append("draft_a", [segment(), segment()], expected)
        assert (info.value.stream_id, info.value.expected_seq, info.value.actual_seq) == (
            "draft_a",
            expected,
            2,
        )
    with pytest.raises(ConcurrencyConflict):
        await store.append("draft_new", [created()], 1)
    assert await store.head("draft_a") == 2
    assert await store.head("draft_new") == 0
    assert await store.last_position() == 2
    assert len(await store.read_all()) == 2
    assert seen == []
    assert (await verify_log(store)).ok


async def test_a_conflicting_append_does_not_spoil_its_group(store: Store) -> None:
    """Concurrent appends with good and bad expectations: only the bad ones fail."""
    await store.append("draft_a", [created()], 0)
    await store.append("draft_b", [created()], 0)
    outcomes = await asyncio.gather(
        store.append("draft_a", [segment()], 1),
        store.append("draft_a", [segment()], 1),
        store.append("draft_b", [segment()], 1),
        store.append("draft_b", [segment()], 5),
        return_exceptions=True,
    )
    conflicts = [o for o in outcomes if isinstance(o, ConcurrencyConflict)]
    assert len(conflicts) == 2
    assert not [
        o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, ConcurrencyConflict)
    ]
    assert await store.head("draft_a") == 2
    assert await store.head("draft_b") == 2
    assert (await verify_log(store)).ok


# -- idempotency ------------------------------------------------------------------------------


async def test_idempotent_retry_is_replayed_and_appends_nothing(store: Store) -> None:
    claim = IdempotencyClaim("alice", "key-1", "fp-1")
    first = await store.append("draft_a", [created(), segment()], 0, claim)
    assert first.replayed is None
    assert first.records[0].idempotency == claim

    # a retry states the head it saw the first time: it still replays, never conflicts
    for expected in (0, 2):
        again = await store.append("draft_a", [created(), segment()], expected, claim)
        assert again.records == ()
        assert again.replayed is not None
        assert (again.replayed.stream_id, again.replayed.seq) == ("draft_a", 1)
        assert (again.replayed.user_id, again.replayed.key, again.replayed.fingerprint) == (
            "alice",
            "key-1",
            "fp-1",
        )
    assert await store.last_position() == 2

    found = await store.find_idempotency("alice", "key-1")
    assert found is not None and (found.stream_id, found.seq, found.fingerprint) == ("draft_a", 1, "fp-1")
    stored = await store.read("draft_a")
    assert stored[0].idempotency == claim
    assert stored[1].idempotency is None


async def test_idempotency_key_with_other_fingerprint_is_refused(store: Store) -> None:
    await store.append("draft_a", [created()], 0, IdempotencyClaim("alice", "key-1", "fp-1"))
    with pytest.raises(IdempotencyKeyReused) as info:
        await store.append("draft_a", [segment()], 1, IdempotencyClaim("alice", "key-1", "fp-2"))
    assert (info.value.user_id, info.value.key) == ("alice", "key-1")
    # a key names one request across every draft and endpoint
    with pytest.raises(IdempotencyKeyReused):
        await store.append("draft_b", [created()], 0, IdempotencyClaim("alice", "key-1", "fp-3"))
    assert await store.last_position() == 1
    assert await store.head("draft_b") == 0


async def test_idempotency_keys_belong_to_one_user(store: Store) -> None:
    await store.append("draft_a", [created()], 0, IdempotencyClaim("alice", "shared", "fp-a"))
    result = await store.append("draft_a", [segment()], 1, IdempotencyClaim("bob", "shared", "fp-b"))
    assert result.replayed is None and [r.seq for r in result.records] == [2]
    assert (await store.find_idempotency("bob", "shared")) is not None
    assert (await store.find_idempotency("carol", "shared")) is None


async def test_failed_append_does_not_consume_its_key(store: Store) -> None:
    await store.append("draft_a", [created()], 0)
    claim = IdempotencyClaim("alice", "key-1", "fp-1")
    with pytest.raises(ConcurrencyConflict):
        await store.append("draft_a", [segment()], 0, claim)
    assert await store.find_idempotency("alice", "key-1") is None
    result = await store.append("draft_a", [segment()], 1, claim)
    assert [r.seq for r in result.records] == [2]


async def test_concurrent_retries_with_one_key_append_once(store: Store) -> None:
    await store.append("draft_a", [created()], 0)
    claim = IdempotencyClaim("alice", "key-1", "fp-1")
    outcomes = await asyncio.gather(
        *(store.append("draft_a", [segment()], 1, claim) for _ in range(20)), return_exceptions=True
    )
    written = [o for o in outcomes if not isinstance(o, BaseException) and o.replayed is None]
    replayed = [o for o in outcomes if not isinstance(o, BaseException) and o.replayed is not None]
    assert len(written) == 1
    # the others either replay the winner or lost the race on the head (then a retry replays)
    for o in outcomes:
        assert not isinstance(o, BaseException) or isinstance(o, ConcurrencyConflict)
    for o in replayed:
        assert o.replayed is not None and o.replayed.seq == 2
    assert await store.head("draft_a") == 2
    retry = await store.append("draft_a", [segment()], 1, claim)
    assert retry.replayed is not None and retry.replayed.seq == 2


async def test_idempotency_survives_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "reopen.db")
    claim = IdempotencyClaim("alice", "key-1", "fp-1")
    first = open_store(path)
    await first.open()
    try:
        await first.append("draft_a", [created(), segment()], 0, claim)
    finally:
        await first.close()
    second = open_store(path)
    await second.open()
    try:
        again = await second.append("draft_a", [created()], 0, claim)
        assert again.replayed is not None and (again.replayed.stream_id, again.replayed.seq) == ("draft_a", 1)
        with pytest.raises(IdempotencyKeyReused):
            await second.append("draft_a", [segment()], 2, IdempotencyClaim("alice", "key-1", "other"))
        assert await second.last_position() == 2
        # the chain continues across the reopen
        more = await second.append("draft_a", [segment()], 2)
        assert more.records[0].position == 3
        assert (await verify_log(second)).ok
    finally:
        await second.close()


# -- position path and hash chain --------------------------------------------------------------


async def test_position_path_fills_segment_id_with_global_position(store: Store) -> None:
    await store.append("draft_a", [created()], 0)
    await store.append("draft_b", [created("bob")], 0)
    result = await store.append("draft_a", [segment(position=1), segment(position=2)], 1)
    other = await store.append("draft_b", [segment("bob")], 1)
    for r in (*result.records, *other.records):
        assert r.envelope()["data"]["segment"]["id"] == r.position
    assert [r.position for r in result.records] == [3, 4]
    assert other.records[0].envelope()["data"]["segment"]["id"] == 5
    # the pending event is not modified in place
    pending = segment()
    await store.append("draft_a", [pending], 3)
    assert pending.data["segment"]["id"] == 0


async def test_hash_chain_links_each_draft(store: Store) -> None:
    await store.append("draft_a", [created()], 0)
    await store.append("draft_b", [created("bob")], 0)
    await store.append("draft_a", [segment(), updated()], 1)
    await store.append("draft_b", [segment("bob")], 1)
    for draft_id in ("draft_a", "draft_b"):
        prev = GENESIS_HASH
        for r in await store.read(draft_id):
            assert r.hash == chain_hash(prev, r.position, r.body)
            assert len(r.hash) == 32
            prev = r.hash
    # same content, different drafts: different bodies, different hashes
    a1, b1 = (await store.read("draft_a"))[0], (await store.read("draft_b"))[0]
    assert a1.hash != b1.hash


# -- notifier ---------------------------------------------------------------------------------


async def test_notifier_wakes_listeners_in_seq_order_after_commit(store: Store) -> None:
    await store.append("draft_a", [created()], 0)
    delivered: list[Record] = []
    global_positions: list[int] = []
    checks: list[asyncio.Task[list[Record]]] = []
    loop = asyncio.get_running_loop()

    def on_draft(records: Sequence[Record]) -> None:
        delivered.extend(records)
        # whatever the listener is told about is already readable from the log
        checks.append(loop.create_task(store.read("draft_a", records[0].seq - 1, len(records))))

    def on_any(records: Sequence[Record]) -> None:
        global_positions.extend(r.position for r in records)

    def broken(records: Sequence[Record]) -> None:
        raise RuntimeError("a broken subscriber")

    store.notifier.add_listener("draft_a", broken)
    store.notifier.add_listener("draft_a", on_draft)
    store.notifier.add_global_listener(on_any)
    tasks = [append_retrying(store, "draft_a", segment()) for _ in range(30)]
    tasks += [append_retrying(store, f"draft_{i}", created()) for i in range(5)]
    seqs = await asyncio.gather(*tasks)
    assert sorted(seqs[:30]) == list(range(2, 32))
    assert [r.seq for r in delivered] == list(range(2, 32))
    assert all(r.stream_id == "draft_a" for r in delivered)
    assert global_positions == list(range(2, 37))
    read_back = [r for batch in await asyncio.gather(*checks) for r in batch]
    assert read_back == delivered

    store.notifier.remove_listener("draft_a", on_draft)
    store.notifier.remove_listener("draft_a", broken)
    store.notifier.remove_global_listener(on_any)
    await store.append("draft_a", [segment()], 31)
    assert len(delivered) == 30 and len(global_positions) == 35
    assert store.notifier.listener_count("draft_a") == 0


async def test_notified_before_append_returns(store: Store) -> None:
    delivered: list[int] = []
    store.notifier.add_listener("draft_a", lambda records: delivered.extend(r.seq for r in records))
    await store.append("draft_a", [created()], 0)
    assert delivered == [1]
    await store.append("draft_a", [segment(), segment()], 1)
    assert delivered == [1, 2, 3]


async def _listening(store: Store, draft_id: str, count: int) -> None:
    for _ in range(1000):
        if store.notifier.listener_count(draft_id) >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError("the waiter never subscribed")


async def test_wait_for_wakes_on_a_later_seq(store: Store) -> None:
    await store.append("draft_a", [created()], 0)
    waiter = asyncio.create_task(store.notifier.wait_for("draft_a", 2, timeout=10))
    await _listening(store, "draft_a", 1)
    await store.append("draft_a", [segment()], 1)  # seq 2 is not after 2: keeps waiting
    assert not waiter.done()
    await store.append("draft_a", [segment()], 2)
    assert await waiter is True
    assert store.notifier.listener_count("draft_a") == 0


async def test_wait_for_times_out_and_ignores_other_drafts(store: Store) -> None:
    waiter = asyncio.create_task(store.notifier.wait_for("draft_a", 0, timeout=0.05))
    await _listening(store, "draft_a", 1)
    await store.append("draft_b", [created()], 0)
    assert await waiter is False
    assert store.notifier.listener_count("draft_a") == 0


# -- snapshots --------------------------------------------------------------------------------


async def test_snapshots_save_load_list_reset(store: Store) -> None:
    assert await store.load_snapshot("draft_a") is None
    assert await store.snapshot_checkpoint() == 0
    snaps = [Snapshot(f"draft_{i:02d}", i + 1, f'{{"n":{i}}}'.encode()) for i in range(25)]
    await store.save_snapshots(snaps[:10], 10)
    await store.save_snapshots(snaps[10:], 25)
    assert await store.load_snapshot("draft_03") == snaps[3]
    assert await store.snapshot_checkpoint() == 25
    assert await store.list_snapshots() == snaps
    assert await store.list_snapshots("draft_09", 5) == snaps[10:15]
    assert await store.list_snapshots("draft_24") == []

    # never replaced by an older seq; a newer or equal one replaces
    await store.save_snapshots([Snapshot("draft_03", 2, b"older")], 30)
    assert await store.load_snapshot("draft_03") == snaps[3]
    await store.save_snapshots([Snapshot("draft_03", 4, b"same")], 30)
    assert await store.load_snapshot("draft_03") == Snapshot("draft_03", 4, b"same")
    await store.save_snapshots([Snapshot("draft_03", 9, b"newer")], 30)
    assert await store.load_snapshot("draft_03") == Snapshot("draft_03", 9, b"newer")
    # the checkpoint never goes back either
    await store.save_snapshots([], 12)
    assert await store.snapshot_checkpoint() == 30

    await store.reset_snapshots()
    assert await store.load_snapshot("draft_03") is None
    assert await store.list_snapshots() == []
    assert await store.snapshot_checkpoint() == 0
    await store.save_snapshots([Snapshot("draft_03", 1, b"again")], 3)
    assert await store.load_snapshot("draft_03") == Snapshot("draft_03", 1, b"again")


# -- verify and concurrency -------------------------------------------------------------------


async def test_verify_passes_on_a_mixed_log(store: Store) -> None:
    for i in range(10):
        await store.append(f"draft_{i}", [created()], 0)
    for round_ in range(5):
        for i in range(10):
            await store.append(f"draft_{i}", [segment(), updated(title=f"t{round_}")], 1 + 2 * round_)
    seen: list[tuple[int, int]] = []
    report = await verify_log(store, lambda done, total: seen.append((done, total)))
    assert report.ok, report.problem
    assert (report.events, report.streams) == (110, 10)
    assert seen[-1] == (110, 110)


class _AppendsRightAfterItsLength:
    """The store as a server sees it while ``verify`` runs: another append commits right after
    the check has read the log's length."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def last_position(self) -> int:
        length = await self._store.last_position()
        await self._store.append("draft_late", [created()], 0)
        return length

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


async def test_verify_checks_the_log_as_it_was_when_it_began(store: Store) -> None:
    """Appends made while the check runs are not "positions the log did not claim"."""
    for i in range(3):
        await store.append(f"draft_{i}", [created(), segment()], 0)
    report = await verify_log(_AppendsRightAfterItsLength(store))  # type: ignore[arg-type]
    assert report.ok, report.problem
    assert (report.events, report.streams) == (6, 3)
    assert (await verify_log(store)).events == 7  # the late append is there, for the next check


async def test_200_concurrent_appenders_to_one_draft(store: Store) -> None:
    await store.append("draft_hot", [created()], 0)
    seqs = await asyncio.gather(*(append_retrying(store, "draft_hot", segment()) for _ in range(200)))
    assert sorted(seqs) == list(range(2, 202))
    records = await store.read("draft_hot")
    assert [r.seq for r in records] == list(range(1, 202))
    assert [r.position for r in await store.read_all(0, 10_000)] == list(range(1, 202))
    assert (await verify_log(store)).ok


async def test_200_concurrent_appenders_across_50_drafts(store: Store) -> None:
    """Each of 200 appenders adds one event to each of 50 drafts, in its own order."""
    drafts = [f"draft_{i:02d}" for i in range(50)]
    for d in drafts:
        await store.append(d, [created()], 0)

    async def appender(n: int) -> list[tuple[str, int]]:
        order = drafts[:]
        random.Random(n).shuffle(order)
        return [(d, await append_retrying(store, d, segment())) for d in order]

    results = await asyncio.gather(*(appender(n) for n in range(200)))
    per_draft: dict[str, list[int]] = {d: [] for d in drafts}
    for pairs in results:
        for d, seq in pairs:
            per_draft[d].append(seq)
    for d in drafts:
        assert sorted(per_draft[d]) == list(range(2, 202)), d
        assert [r.seq for r in await store.read(d)] == list(range(1, 202))
    assert await store.last_position() == 50 * 201
    report = await verify_log(store)
    assert report.ok, report.problem
    assert report.events == 50 * 201


# -- bulk import (ringlog copy) -----------------------------------------------------------------


async def _source_log() -> list[Record]:
    """A small interleaved log with idempotency claims, built by the in-memory store."""
    source = MemoryStore()
    await source.append("draft_a", [created(), segment()], 0, IdempotencyClaim("alice", "k1", "fp1"))
    await source.append("draft_b", [created("bob")], 0)
    await source.append("draft_a", [updated()], 2, IdempotencyClaim("alice", "k2", "fp2"))
    await source.append("draft_b", [segment("bob"), segment("bob", position=2)], 1)
    return await source.read_all(0, 100)


async def test_import_records_keeps_every_field_and_continues_the_log(store: Store) -> None:
    assert isinstance(store, BulkImporter)
    records = await _source_log()
    seen: list[Record] = []
    store.notifier.add_global_listener(seen.extend)
    await store.import_records(records[:3])
    await store.import_records(records[3:])
    stored = await store.read_all(0, 100)
    assert stored == records
    assert [r.idempotency for r in stored] == [r.idempotency for r in records]
    found = await store.find_idempotency("alice", "k2")
    assert found is not None and (found.stream_id, found.seq, found.fingerprint) == ("draft_a", 3, "fp2")
    assert seen == records  # subscribers hear of imported records as of appended ones
    # the imported log goes on like any other
    more = await store.append("draft_a", [segment()], 3)
    assert more.records[0].position == len(records) + 1
    assert (await verify_log(store)).ok


def _broken(records: list[Record], fault: str) -> list[Record]:
    first = records[0]
    if fault == "position-gap":
        return build_records("draft_a", [created()], 0, 1, GENESIS_HASH, None)
    if fault == "seq-gap":
        return build_records("draft_a", [created()], 1, 0, GENESIS_HASH, None)
    if fault == "bad-hash":
        return build_records("draft_a", [created()], 0, 0, b"\x01" * 32, None)
    if fault == "skips-a-record":
        return [first, records[2]]
    if fault == "repeats-a-record":
        return [first, first]
    raise AssertionError(fault)


@pytest.mark.parametrize(
    "fault", ["position-gap", "seq-gap", "bad-hash", "skips-a-record", "repeats-a-record"]
)
async def test_every_store_refuses_the_same_broken_import_the_same_way(store: Store, fault: str) -> None:
    """One mapping of refusals: what PostgreSQL's triggers refuse, SQLite and memory refuse too,
    with the same error (LogCorrupted), and nothing of the batch is written."""
    assert isinstance(store, BulkImporter)
    records = await _source_log()
    with pytest.raises(LogCorrupted):
        await store.import_records(_broken(records, fault))
    assert await store.last_position() == 0
    await store.import_records(records)  # the refusal left nothing behind
    assert await store.read_all(0, 100) == records


@pytest.mark.parametrize("bad", ["\x00", "\ud800", "x\udcff"])
async def test_every_store_refuses_an_import_it_cannot_represent_the_same_way(store: Store, bad: str) -> None:
    assert isinstance(store, BulkImporter)
    (good,) = build_records("draft_a", [created()], 0, 0, GENESIS_HASH, None)
    for record in (
        dataclasses.replace(good, stream_id=bad),
        dataclasses.replace(good, type=bad),
        dataclasses.replace(good, idempotency=IdempotencyClaim(bad, "k", "fp")),
        dataclasses.replace(good, idempotency=IdempotencyClaim("alice", bad, "fp")),
    ):
        with pytest.raises(UnrepresentableValue):
            await store.import_records([record])
    assert await store.last_position() == 0
