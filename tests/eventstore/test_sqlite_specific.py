"""What only the SQLite backend promises: schema guards, WAL and durability, crash safety, tamper evidence."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from eventstore import StoreUnavailable, open_store
from eventstore.events import chain_hash
from eventstore.sqlite import SQLiteStore
from eventstore.verify import VerifyReport, verify_log
from tests.eventstore.helpers import created, segment, updated


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "log.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def _fill(store: SQLiteStore, drafts: int = 3, segments: int = 4) -> None:
    """A small interleaved log: position order mixes the drafts."""
    for d in range(drafts):
        await store.append(f"draft_{d}", [created()], 0)
    for n in range(segments):
        for d in range(drafts):
            await store.append(f"draft_{d}", [segment(content=f"s{n}", position=n + 1)], n + 1)


def _raw(path: str | Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None)


# -- the schema keeps the invariants ----------------------------------------------------------


async def test_triggers_refuse_update_and_delete(sqlite_store: SQLiteStore) -> None:
    await _fill(sqlite_store)
    conn = _raw(sqlite_store.path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE events SET body = x'00' WHERE position = 2")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE events SET idem_key = 'sneaky' WHERE position = 2")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM events WHERE position = 2")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM events")
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 15
    finally:
        conn.close()
    assert (await verify_log(sqlite_store)).ok


async def test_triggers_refuse_out_of_order_inserts(sqlite_store: SQLiteStore) -> None:
    await _fill(sqlite_store, drafts=1, segments=1)  # draft_0 has seqs 1, 2 at positions 1, 2
    conn = _raw(sqlite_store.path)
    row = conn.execute("SELECT body, hash FROM events WHERE position = 2").fetchone()
    insert = "INSERT INTO events (position, draft_id, seq, type, body, hash) VALUES (?, ?, ?, ?, ?, ?)"
    try:
        for position, draft_id, seq in [
            (3, "draft_0", 4),  # skips seq 3
            (3, "draft_0", 2),  # repeats seq 2
            (5, "draft_0", 3),  # skips position 3 and 4
            (2, "draft_0", 3),  # reuses a position
            (3, "draft_new", 2),  # a new draft must start at seq 1
            (3, "draft_new", 0),  # seqs start at 1
        ]:
            with pytest.raises(sqlite3.IntegrityError):
                conn.execute(insert, (position, draft_id, seq, "collab.segment_added", row[0], row[1]))
        assert conn.execute("SELECT COUNT(*), MAX(position) FROM events").fetchone() == (2, 2)
    finally:
        conn.close()
    assert await sqlite_store.head("draft_0") == 2
    assert (await verify_log(sqlite_store)).ok


async def test_wal_mode_and_full_synchronous_by_default(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "d.db"))
    assert isinstance(store, SQLiteStore)
    await store.open()
    try:
        assert store.synchronous == "FULL"
        assert store._wconn is not None
        assert store._wconn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store._wconn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        await store.close()
    conn = _raw(tmp_path / "d.db")
    try:  # WAL is a property of the file: it persists after the store closes
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


async def test_normal_synchronous_is_an_explicit_option(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'n.db'}", synchronous="normal")
    assert isinstance(store, SQLiteStore)
    await store.open()
    try:
        assert store._wconn is not None
        assert store._wconn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        await store.append("draft_a", [created()], 0)
        assert await store.head("draft_a") == 1
    finally:
        await store.close()
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(tmp_path / "x.db", synchronous="OFF")


async def test_a_long_reader_does_not_block_appends(sqlite_store: SQLiteStore) -> None:
    await _fill(sqlite_store, drafts=1, segments=1)
    conn = _raw(sqlite_store.path)
    try:
        conn.execute("BEGIN")
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2  # holds a read snapshot
        await asyncio.wait_for(sqlite_store.append("draft_0", [updated()], 2), timeout=5)
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2  # its snapshot is stable
        conn.execute("COMMIT")
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 3
    finally:
        conn.close()


async def test_close_finishes_queued_appends_then_refuses(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.db")
    await store.open()
    tasks = [asyncio.create_task(store.append(f"draft_{i}", [created()], 0)) for i in range(100)]
    while not all(t.done() for t in tasks) and store._committer.pending < 100:
        await asyncio.sleep(0)  # let every append reach the queue (a yield, not a wait)
    await store.close()
    assert all(t.result().records[0].seq == 1 for t in tasks)
    with pytest.raises(StoreUnavailable):
        await store.append("draft_x", [created()], 0)
    reopened = SQLiteStore(tmp_path / "c.db")
    await reopened.open()
    try:
        assert await reopened.last_position() == 100
    finally:
        await reopened.close()


async def test_unopenable_file_is_store_unavailable(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "missing-dir" / "x.db")
    with pytest.raises(StoreUnavailable):
        await store.open()


# -- a real crash -----------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, random, sys
    from eventstore import ConcurrencyConflict, NewEvent
    from eventstore.sqlite import SQLiteStore

    TS = "2025-12-23T20:30:45.123Z"

    async def producer(store, n):
        rng = random.Random(n)
        while True:
            draft = f"draft_{rng.randrange(20)}"
            head = await store.head(draft)
            if head == 0:
                event = NewEvent("collab.draft_created", "u", TS,
                                 {"title": "t", "description": "", "creator_id": "u"})
            else:
                seg = {"id": 0, "author_user_id": "u", "content": "x" * rng.randrange(1, 200),
                       "position": head, "created_at": TS}
                event = NewEvent("collab.segment_added", "u", TS, {"segment": seg}, ("segment", "id"))
            try:
                result = await store.append(draft, [event], head)
            except ConcurrencyConflict:
                continue
            for r in result.records:
                sys.stdout.write(f"{r.stream_id} {r.seq} {r.position} {r.hash.hex()}\\n")
            sys.stdout.flush()

    async def main():
        store = SQLiteStore(sys.argv[1])
        await store.open()
        sys.stdout.write("ready\\n")
        sys.stdout.flush()
        await asyncio.gather(*(producer(store, n) for n in range(64)))

    asyncio.run(main())
    """
)


def test_sigkill_loses_no_acknowledged_append(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    acks: list[str] = []
    with subprocess.Popen(
        [sys.executable, str(script), str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        try:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
            while len(acks) < 3000:
                line = child.stdout.readline()
                assert line, f"child died early: {child.stderr.read()}"
                acks.append(line)
            child.send_signal(signal.SIGKILL)  # mid-load: group commits are in flight
            acks.extend(child.stdout.readlines())  # everything it had acknowledged before dying
        finally:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL

    acked = {}
    for line in acks:
        draft, seq, position, hash_hex = line.split()
        acked[(draft, int(seq))] = (int(position), bytes.fromhex(hash_hex))
    assert len(acked) == len(acks)  # no (draft, seq) was acknowledged twice

    async def check() -> VerifyReport:
        store = SQLiteStore(db)
        await store.open()
        try:
            stored = {(r.stream_id, r.seq): (r.position, r.hash) for r in await store.read_all(0, 1_000_000)}
            missing = [k for k in acked if k not in stored]
            assert not missing, f"{len(missing)} acknowledged appends lost, e.g. {missing[:3]}"
            changed = [k for k, v in acked.items() if stored[k] != v]
            assert not changed, f"acknowledged appends changed: {changed[:3]}"
            return await verify_log(store)
        finally:
            await store.close()

    report = asyncio.run(check())
    assert report.ok, report.problem
    assert report.events >= len(acked)

    cli = subprocess.run(
        [sys.executable, "-m", "server.cli", "verify", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.startswith(f"ok: {report.events} events")


# -- tampering is detected --------------------------------------------------------------------


@pytest.fixture
async def pristine_db(tmp_path: Path) -> Path:
    """A closed, verified log of 3 drafts × 5 events, interleaved (positions 1..15)."""
    path = tmp_path / "pristine.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        await _fill(store)
        assert (await verify_log(store)).ok
    finally:
        await store.close()
    return path


def _tampered(pristine: Path, name: str, tamper: Callable[[sqlite3.Connection], None]) -> Path:
    path = pristine.with_name(name)
    shutil.copy(pristine, path)
    conn = _raw(path)
    try:
        for (trigger,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute("BEGIN")
        tamper(conn)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return path


def _row(conn: sqlite3.Connection, position: int) -> tuple[str, int, bytes, bytes]:
    draft_id, seq, body, digest = conn.execute(
        "SELECT draft_id, seq, body, hash FROM events WHERE position = ?", (position,)
    ).fetchone()
    return draft_id, seq, bytes(body), bytes(digest)


def _edit_body(conn: sqlite3.Connection) -> None:
    _draft, _seq, body, _ = _row(conn, 8)
    envelope = orjson.loads(body)
    envelope["data"]["segment"]["content"] = "forged"
    conn.execute(
        "UPDATE events SET body = ? WHERE position = 8",
        (orjson.dumps(envelope, option=orjson.OPT_SORT_KEYS),),
    )


def _edit_body_and_its_hash(conn: sqlite3.Connection) -> None:
    """A smarter forger re-hashes the edited link: the next link of the draft then breaks."""
    _draft, _seq, body, _ = _row(conn, 8)
    prev = _row(conn, 5)[3]  # position 5 is the previous event of the same draft (3 drafts interleaved)
    forged = body.replace(b'"content":"s1"', b'"content":"forged"')
    assert forged != body
    conn.execute(
        "UPDATE events SET body = ?, hash = ? WHERE position = 8", (forged, chain_hash(prev, 8, forged))
    )


def _delete_middle(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM events WHERE position = 7")


def _delete_and_close_gap(conn: sqlite3.Connection) -> None:
    """Delete position 7 and shift later positions down: the draft's seqs then have a gap."""
    conn.execute("DELETE FROM events WHERE position = 7")
    for position in range(8, 16):
        conn.execute("UPDATE events SET position = ? WHERE position = ?", (position - 1, position))


def _swap_positions(conn: sqlite3.Connection) -> None:
    """Events 2 and 3 of draft_0 (positions 4 and 7) trade places in the log."""
    conn.execute("UPDATE events SET position = -4 WHERE position = 4")
    conn.execute("UPDATE events SET position = 4 WHERE position = 7")
    conn.execute("UPDATE events SET position = 7 WHERE position = -4")


def _swap_bodies(conn: sqlite3.Connection) -> None:
    """Seqs and positions stay; the bodies and hashes of draft_0's seq 2 and 3 are exchanged."""
    _, _, body4, hash4 = _row(conn, 4)
    _, _, body7, hash7 = _row(conn, 7)
    conn.execute("UPDATE events SET body = ?, hash = ? WHERE position = 4", (body7, hash7))
    conn.execute("UPDATE events SET body = ?, hash = ? WHERE position = 7", (body4, hash4))


def _swap_everything_but_position(conn: sqlite3.Connection) -> None:
    """A consistent-looking reordering: seq columns, bodies and hashes all move together."""
    cols = "draft_id, seq, type, body, hash"
    a = conn.execute(f"SELECT {cols} FROM events WHERE position = 4").fetchone()
    b = conn.execute(f"SELECT {cols} FROM events WHERE position = 7").fetchone()
    sets = "draft_id = ?, seq = ?, type = ?, body = ?, hash = ?"
    conn.execute("UPDATE events SET seq = 999 WHERE position = 4")  # dodge UNIQUE(draft_id, seq)
    conn.execute(f"UPDATE events SET {sets} WHERE position = 7", a)
    conn.execute(f"UPDATE events SET {sets} WHERE position = 4", b)


def _swap_across_drafts(conn: sqlite3.Connection) -> None:
    """draft_0's seq 2 (position 4) and draft_1's seq 2 (position 5) trade places in the log.

    Each draft's own order is untouched; only the position in each link's hash can tell.
    """
    conn.execute("UPDATE events SET position = -4 WHERE position = 4")
    conn.execute("UPDATE events SET position = 4 WHERE position = 5")
    conn.execute("UPDATE events SET position = 5 WHERE position = -4")


TAMPERING = [
    pytest.param(_edit_body, 8, "hash chain broken", id="edited-body"),
    pytest.param(_edit_body_and_its_hash, 11, "hash chain broken", id="edited-body-rehashed"),
    pytest.param(_delete_middle, 8, "position gap", id="deleted-event"),
    pytest.param(_delete_and_close_gap, 7, "hash chain broken", id="deleted-event-gap-closed"),
    pytest.param(_swap_positions, 4, "seq out of order", id="reordered-positions"),
    pytest.param(_swap_bodies, 4, "body disagrees", id="reordered-bodies"),
    pytest.param(_swap_everything_but_position, 4, "seq out of order", id="reordered-rows"),
    pytest.param(_swap_across_drafts, 4, "hash chain broken", id="reordered-across-drafts"),
]


@pytest.mark.parametrize(("tamper", "bad_position", "problem"), TAMPERING)
async def test_verify_names_the_first_tampered_event(
    pristine_db: Path, tamper: Callable[[sqlite3.Connection], None], bad_position: int, problem: str
) -> None:
    path = _tampered(pristine_db, "tampered.db", tamper)
    store = SQLiteStore(path)
    await store.open()
    try:
        report = await verify_log(store)
    finally:
        await store.close()
    assert not report.ok
    assert report.bad_position == bad_position
    assert report.problem is not None and problem in report.problem
    assert f"position {bad_position}" in report.problem

    cli = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "server.cli", "verify", "--db", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode != 0
    assert problem in cli.stderr and f"position {bad_position}" in cli.stderr, cli.stderr


async def test_two_writers_on_one_file_see_each_others_heads(tmp_path: Path) -> None:
    """Each store's writer remembers heads between groups; a foreign append must invalidate that."""
    from eventstore import ConcurrencyConflict

    a, b = SQLiteStore(tmp_path / "shared.db"), SQLiteStore(tmp_path / "shared.db")
    await a.open()
    await b.open()
    try:
        await a.append("draft_x", [created()], 0)
        await a.append("draft_y", [created()], 0)
        await b.append("draft_x", [segment()], 1)  # a did not see this one
        with pytest.raises(ConcurrencyConflict) as info:
            await a.append("draft_x", [segment()], 1)
        assert info.value.actual_seq == 2
        result = await a.append("draft_x", [segment()], 2)
        assert [(r.seq, r.position) for r in result.records] == [(3, 4)]
        await b.append("draft_y", [segment()], 1)
        await a.append("draft_y", [segment()], 2)
        assert [r.seq for r in await b.read("draft_y")] == [1, 2, 3]
        assert (await verify_log(a)).ok
    finally:
        await a.close()
        await b.close()
