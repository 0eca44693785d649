"""A record the storage accepted but the fold cannot take stops everything at a named position.

SQLite's triggers check positions and seqs, not bodies (``ringlog verify`` checks the hash
chain), and PostgreSQL's check the chain too, so a row written by hand or by a broken tool can
hold a body that is not an event, or an event that cannot follow its draft. Before, a server then
failed to start with ``unexpected error: JSONDecodeError …`` (with ``--workers``, a traceback in
the log) and ``rebuild`` likewise. Now each stops at :class:`~projections.runner.UnfoldableRecord`
naming the position (and the draft): one line, exit 1, whatever the kind of bad body.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from eventstore.sqlite import SQLiteStore
from projections.runner import DraftProjector, UnfoldableRecord, rebuild
from tests.hardening.cliproc import ringlog
from tests.projections.drafting import populate

FORGED = "draft_forged0000000000000"


def _segment(draft_id: str, seq: int) -> bytes:
    return orjson.dumps(
        {"type": "collab." + "segment_added", "draft_id": draft_id, "seq": seq, "ts": "2026-11-30T00:00:00.000Z",
         "actor_id": "alice", "data": {"segment": {"author_id": "alice", "content": "x", "seq": seq}}}
    )  # fmt: skip


BODIES = {
    "not JSON": (FORGED, 1, b"not json"),
    "empty": (FORGED, 1, b""),
    "truncated": (FORGED, 1, b'{"type": "collab.draft_cre'),
    "a list": (FORGED, 1, b"[]"),
    "a number": (FORGED, 1, b"1"),
    "a string": (FORGED, 1, b'"event"'),
    "an empty object": (FORGED, 1, b"{}"),
    "no type": (FORGED, 1, b'{"draft_id": "%s", "seq": 1}' % FORGED.encode()),
    "first event not draft_created": (FORGED, 1, _segment(FORGED, 1)),
    "body of another draft": (FORGED, 1, _segment("draft_0", 1)),
}
LAZY = {
    "next seq of a real draft, body says seq 1": ("draft_0", None, _segment("draft_0", 1)),
    "next seq of a real draft, body is null": ("draft_0", None, b"null"),
}
"""A segment of a draft the projector has not cached moves its summary by the seq column alone
(the body is decoded when the draft is read): the projector starts, rebuild still stops there."""


async def _forge(path: Path, case: str) -> int:
    """A log of 2 drafts, then one hand-written row (past SQLite's triggers); its position."""
    store = SQLiteStore(path)
    await store.open()
    try:
        await populate(store, drafts=2, steps=10, seed=5)
        head = await store.last_position()
    finally:
        await store.close()
    draft_id, seq, body = {**BODIES, **LAZY}[case]
    with sqlite3.connect(path) as db:
        if seq is None:
            seq = db.execute("SELECT MAX(seq) FROM events WHERE draft_id = ?", (draft_id,)).fetchone()[0] + 1
        db.execute(
            "INSERT INTO events (position, draft_id, seq, type, body, hash) VALUES (?, ?, ?, ?, ?, ?)",
            (head + 1, draft_id, seq, "collab.segment_added", body, b"\0" * 32),
        )
    return head + 1


@pytest.mark.parametrize("case", list(BODIES))
async def test_the_projector_and_rebuild_stop_at_the_record_and_name_it(tmp_path: Path, case: str) -> None:
    path = tmp_path / "forged.db"
    position = await _forge(path, case)
    store = SQLiteStore(path)
    await store.open()
    try:
        projector = DraftProjector(store, flush_interval=0)
        with pytest.raises(UnfoldableRecord) as raised:
            await projector.start()
        assert raised.value.position == position and raised.value.draft_id == BODIES[case][0]
        assert f"position {position}" in str(raised.value) and "ringlog verify" in str(raised.value)
        assert projector.position == position - 1  # everything before it was folded, nothing after
        with pytest.raises(UnfoldableRecord) as raised:
            await rebuild(store)
        assert raised.value.position == position
    finally:
        await store.close()


@pytest.mark.parametrize("case", list(LAZY))
async def test_a_record_the_projector_folds_lazily_still_stops_rebuild(tmp_path: Path, case: str) -> None:
    path = tmp_path / "forged.db"
    position = await _forge(path, case)
    store = SQLiteStore(path)
    await store.open()
    try:
        projector = DraftProjector(store, flush_interval=0)
        await projector.start()
        try:
            assert projector.position == position  # moved past it by the seq column, undecoded
        finally:
            await projector.stop()
        with pytest.raises(UnfoldableRecord) as raised:
            await rebuild(store)
        assert raised.value.position == position
    finally:
        await store.close()


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("case", ["not JSON", "first event not draft_created"])
async def test_serve_and_rebuild_refuse_in_one_line_naming_the_position(
    tmp_path: Path, case: str, workers: str
) -> None:
    path = tmp_path / "forged.db"
    position = await _forge(path, case)
    out = ringlog("serve", "--port", "0", "--workers", workers, "--jwt-secret", "s" * 32, "--db", str(path))
    err = out.stderr.decode()
    assert out.returncode == 1 and b"listening" not in out.stdout, err
    assert "Traceback" not in err and "unexpected error" not in err, err
    assert f"cannot start: the event at position {position} (draft {BODIES[case][0]!r}" in err, err
    out = ringlog("rebuild", "--db", str(path))
    err = out.stderr.decode()
    assert out.returncode == 1 and len(err.strip().splitlines()) == 1, err
    assert f"position {position} cannot be folded" in err and "Traceback" not in err, err


@pytest.mark.postgres
@pytest.mark.parametrize("case", ["not JSON", "first event not draft_created"])
async def test_on_postgresql_a_row_with_a_correct_hash_stops_serve_and_rebuild_the_same_way(
    case: str,
) -> None:
    """PostgreSQL's trigger checks the hash chain as well, so the forged row carries the right
    hash (what the fresh-user trial wrote from psql): the same refusal, naming the position."""
    import hashlib

    import asyncpg

    from eventstore.postgres import PostgresStore
    from tests.pgutil import temporary_database

    async with temporary_database() as url:
        store = PostgresStore(url)
        await store.open()
        try:
            await populate(store, drafts=2, steps=10, seed=5)
        finally:
            await store.close()
        draft_id, seq, body = BODIES[case]
        db = await asyncpg.connect(url)
        try:
            position = 1 + await db.fetchval("SELECT MAX(position) FROM events")
            prev = b"\0" * 32  # a new draft's chain starts from zeros
            digest = hashlib.sha256(bytes(prev) + position.to_bytes(8, "big") + body).digest()
            await db.execute(
                "INSERT INTO events (position, draft_id, seq, type, body, hash) VALUES ($1, $2, $3, $4, $5, $6)",
                position, draft_id, seq, "collab.segment_added", body, digest,
            )  # fmt: skip
        finally:
            await db.close()
        out = ringlog("serve", "--port", "0", "--jwt-secret", "s" * 32, "--db", url)
        err = out.stderr.decode()
        assert out.returncode == 1 and b"listening" not in out.stdout, err
        assert f"cannot start: the event at position {position} (draft {draft_id!r}" in err, err
        assert "Traceback" not in err, err
        out = ringlog("rebuild", "--db", url)
        err = out.stderr.decode()
        assert out.returncode == 1 and f"position {position} cannot be folded" in err, err
