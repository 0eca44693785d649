"""A record the storage accepted but the fold cannot take sets its draft aside, and only it.

SQLite's triggers check positions and seqs, not bodies (``ringlog verify`` checks the hash
chain), and PostgreSQL's check the chain too, so a row written by hand or by a broken tool can
hold a body that is not an event, or an event that cannot follow its draft. Before, a server then
failed to start with ``unexpected error: JSONDecodeError …`` (with ``--workers``, a traceback in
the log), and a running one answered every listing 500. Now the projector sets that draft aside
(:class:`~projections.runner.UnfoldableRecord` names the position): its reads are 500
``internal_error`` saying so, every other draft, listing, append and feed is served, snapshots
and the checkpoint move on; ``rebuild`` stops there in one line, exit 1. Every kind of bad body.
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
from tests.serverproc import ServerProcess

FORGED = "draft_f0f0f0f0f0f0f0f0f0f0"  # of the server's form (draft_ + 20 hex digits)


def _segment(draft_id: str, seq: int) -> bytes:
    return orjson.dumps(
        {"type": "collab." + "segment_added", "draft_id": draft_id, "seq": seq, "ts": "2026-11-30T00:00:00.000Z",
         "actor_id": "alice", "data": {"segment": {"author_id": "alice", "content": "x", "seq": seq}}}
    )  # fmt: skip


def _updated(data: bytes, ts: bytes = b'"2026-11-30T00:00:00.000Z"') -> bytes:
    return (
        b'{"type":"collab.draft_updated","draft_id":"draft_0","seq":SEQ,"ts":' + ts
        + b',"actor_id":"alice","data":' + data + b"}"
    )  # fmt: skip


COLUMN_TYPES = {"collaborator_added for another draft": "collab.collaborator_added"}
"""The row's ``type`` column where it is not the body's own (default: as the case's body says, or
``collab.segment_added``)."""

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
    # on draft_0 at its next seq (SEQ: filled in), under the column type of a summary event, so
    # the projector decodes it as it advances (review: these once stopped every listing and start)
    "draft_updated with data null": ("draft_0", None, _updated(b"null")),
    "draft_updated with data a list": ("draft_0", None, _updated(b"[]")),
    "draft_updated with data a string": ("draft_0", None, _updated(b'"x"')),
    "draft_updated with data a number": ("draft_0", None, _updated(b"5")),
    "draft_updated with ts a number": ("draft_0", None, _updated(b'{"title":"t"}', ts=b"5")),
    "draft_updated with ts null": ("draft_0", None, _updated(b'{"title":"t"}', ts=b"null")),
    "draft_updated with seq a string": (
        "draft_0",
        None,
        _updated(b'{"title":"t"}').replace(b":SEQ", b':"SEQ"'),
    ),
    "draft_updated with seq true": ("draft_0", None, _updated(b'{"title":"t"}').replace(b":SEQ", b":true")),
    "draft_updated whose body says another seq": ("draft_0", 0, _updated(b'{"title":"t"}')),
    "collaborator_added for another draft": (
        "draft_0",
        None,
        b'{"type":"collab.collaborator_added","draft_id":"draft_1","seq":SEQ,"ts":"2026-11-30T00:00:00.000Z",'
        b'"actor_id":"alice","data":{"collaborator":{"user_id":"mallory","role":"contributor"}}}',
    ),
}
LAZY = {
    "next seq of a real draft, body says seq 1": ("draft_0", None, _segment("draft_0", 1)),
    "next seq of a real draft, body is null": ("draft_0", None, b"null"),
    "segment with no seq": ("draft_0", None, _segment("draft_0", 1).replace(b'"seq":1,', b"", 1)),
    "segment with no ts": (
        "draft_0",
        None,
        _segment("draft_0", 1).replace(b'"ts":"2026-11-30T00:00:00.000Z",', b""),
    ),
    "segment of draft_1 under draft_0's next seq": (
        "draft_0",
        None,
        _segment("draft_1", 1).replace(b'"seq":1', b'"seq":SEQ'),
    ),
    "segment with data null": (
        "draft_0",
        None,
        b'{"type":"collab.segment_added","draft_id":"draft_0","seq":SEQ,'
        b'"ts":"2026-11-30T00:00:00.000Z","actor_id":"alice","data":null}',
    ),
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
        following = db.execute("SELECT MAX(seq) FROM events WHERE draft_id = ?", (draft_id,)).fetchone()[0]
        body = body.replace(b"SEQ", str((following or 0) + 1 if seq != 0 else 1).encode())
        db.execute(
            "INSERT INTO events (position, draft_id, seq, type, body, hash) VALUES (?, ?, ?, ?, ?, ?)",
            (head + 1, draft_id, seq or (following or 0) + 1, _column_type(case, body), body, b"\0" * 32),
        )
    return head + 1


def _column_type(case: str, body: bytes) -> str:
    if case in COLUMN_TYPES:
        return COLUMN_TYPES[case]
    return "collab.draft_updated" if b"collab.draft_updated" in body else "collab.segment_added"


async def _check_set_aside(projector: DraftProjector, store: SQLiteStore, victim: str, position: int) -> None:
    with pytest.raises(UnfoldableRecord) as raised:
        await projector.get(victim)
    assert raised.value.position == position and raised.value.draft_id == victim
    assert f"position {position}" in str(raised.value) and "ringlog verify" in str(raised.value)
    assert set(projector.set_aside) == {victim}
    sound = {"draft_0", "draft_1"} - {victim}
    for draft_id in sound:  # every other draft is served, and can be written
        state = await projector.get(draft_id)
        assert state is not None and state.seq == projector.known_head(draft_id)
    for user in ("alice", "bob", "carol"):
        listed = {row.id for row in await projector.drafts_for(user)}
        assert victim not in listed and listed <= sound
    assert projector.position == position  # moved past it
    projector._dirty |= sound
    await projector.flush()  # snapshots and the checkpoint move on without the victim
    assert await store.snapshot_checkpoint() == position
    assert await store.load_snapshot(victim) is None or victim == "draft_0"


@pytest.mark.parametrize(("case", "at_start"), [*((c, True) for c in BODIES), *((c, False) for c in LAZY)])
async def test_the_projector_sets_the_draft_aside_and_rebuild_stops_at_the_record(
    tmp_path: Path, case: str, at_start: bool
) -> None:
    """``at_start``: the start folds the global log and meets the record there; otherwise (a
    segment of a draft not cached) it moves by seq alone and the record is met at the first read."""
    path = tmp_path / "forged.db"
    position = await _forge(path, case)
    victim = {**BODIES, **LAZY}[case][0]
    store = SQLiteStore(path)
    await store.open()
    try:
        projector = DraftProjector(store, flush_interval=0)
        await projector.start()
        try:
            if at_start:
                assert set(projector.set_aside) == {victim}
            else:
                assert projector.set_aside == {} and projector.position == position
            await _check_set_aside(projector, store, victim, position)
        finally:
            await projector.stop()
        with pytest.raises(UnfoldableRecord) as raised:
            await rebuild(store)
        assert raised.value.position == position
    finally:
        await store.close()


async def _serves_all_but(url: str, victim: str, position: int) -> None:
    """Against a running server: the victim 500 with the position, everything else served."""
    import aiohttp

    alice = {"X-User-Id": "alice"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/v1/collab/drafts/{victim}", headers=alice) as r:
            body = await r.json()
            assert r.status == 500 and body["error"]["code"] == "internal_error", body
            assert (
                body["error"]["details"] == {"position": position} and "set aside" in body["error"]["message"]
            )
        async with http.get(f"{url}/v1/collab/drafts", headers=alice) as r:
            listed = [row["id"] for row in (await r.json())["data"]]
            assert r.status == 200 and victim not in listed and "draft_1" in listed, listed
        async with http.post(
            f"{url}/v1/collab/drafts", headers=alice, json={"title": "after the forged row"}
        ) as r:
            assert r.status == 201
            draft_id = (await r.json())["data"]["id"]
        async with http.post(
            f"{url}/v1/collab/drafts/{draft_id}/segments", headers=alice, json={"content": "still writing"}
        ) as r:
            assert r.status == 201
        async with http.get(f"{url}/v1/me/events?after=0", headers=alice) as r:
            assert r.status == 200, await r.text()
            assert draft_id in {e["event"]["draft_id"] for e in (await r.json())["data"]}


@pytest.mark.parametrize("case", ["not JSON", "first event not draft_created"])
async def test_a_server_starts_and_serves_everything_but_the_draft_set_aside(
    tmp_path: Path, case: str
) -> None:
    path = tmp_path / "forged.db"
    position = await _forge(path, case)
    log_path = tmp_path / "server.log"
    with ServerProcess(str(path), "--dev-auth", "--rate-limit", "0", log_path=log_path) as server:
        await _serves_all_but(server.url, BODIES[case][0], position)
    text = log_path.read_text()
    assert text.count("set aside") == 1 and f"position {position}" in text and "Traceback" not in text, text
    out = ringlog("rebuild", "--db", str(path))
    err = out.stderr.decode()
    assert out.returncode == 1 and len(err.strip().splitlines()) == 1, err
    assert "the log is unsound, nothing was rebuilt" in err and f"position {position}" in err, err
    assert "Traceback" not in err, err


@pytest.mark.postgres
@pytest.mark.parametrize("case", ["not JSON", "first event not draft_created"])
async def test_on_postgresql_a_row_with_a_correct_hash_is_set_aside_the_same_way(case: str) -> None:
    """PostgreSQL's trigger checks the hash chain as well, so the forged row carries the right
    hash (what the fresh-user trial wrote from psql): the same outcome, on a real node."""
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
            digest = hashlib.sha256(prev + position.to_bytes(8, "big") + body).digest()
            await db.execute(
                "INSERT INTO events (position, draft_id, seq, type, body, hash) VALUES ($1, $2, $3, $4, $5, $6)",
                position, draft_id, seq, "collab.segment_added", body, digest,
            )  # fmt: skip
        finally:
            await db.close()
        with ServerProcess(url, "--dev-auth", "--rate-limit", "0") as server:
            await _serves_all_but(server.url, draft_id, position)
        out = ringlog("rebuild", "--db", url)
        err = out.stderr.decode()
        # refused by the verification (a body verify reads as bad) or by the fold (a sound-looking
        # body that breaks the drafts' rules): either way one line naming the position, exit 1
        assert out.returncode == 1 and f"position {position}" in err.splitlines()[-1], err
        assert "nothing was rebuilt" in err or "cannot be folded" in err, err


@pytest.mark.parametrize("to_user", ['"a\\u0000b"', "5", "null", '["alice"]', '"' + "u" * 2000 + '"'])
async def test_a_user_id_no_store_keeps_is_left_out_of_the_feed_for_everyone_else(
    tmp_path: Path, to_user: str
) -> None:
    """Review: a ring pass naming a user id the log cannot keep (NUL, not text, too long) made the
    feed index refuse its whole page, so ``/v1/me/events`` stopped for every user, for good."""
    path = tmp_path / "forged.db"
    await _forge(path, "no type")  # a sound log of 2 drafts, then one row we replace below
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER events_no_delete")
        db.execute("DELETE FROM events WHERE position = (SELECT MAX(position) FROM events)")
        head, following = db.execute(
            "SELECT MAX(position), (SELECT MAX(seq) FROM events WHERE draft_id = 'draft_0') FROM events"
        ).fetchone()
        body = (
            b'{"type":"collab.ring_passed","draft_id":"draft_0","seq":%d,"ts":"2026-11-30T00:00:00.000Z",'
            b'"actor_id":"alice","data":{"from_user_id":"alice","to_user_id":%s}}'
            % (following + 1, to_user.encode())
        )
        db.execute(
            "INSERT INTO events (position, draft_id, seq, type, body, hash) VALUES (?, 'draft_0', ?, ?, ?, ?)",
            (head + 1, following + 1, "collab.ring_passed", body, b"\0" * 32),
        )
    with ServerProcess(
        str(path), "--dev-auth", "--rate-limit", "0", log_path=tmp_path / "server.log"
    ) as server:
        import aiohttp

        alice = {"X-User-Id": "alice"}
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{server.url}/v1/collab/drafts", headers=alice, json={"title": "after"}
            ) as r:
                assert r.status == 201
                draft_id = (await r.json())["data"]["id"]
            async with http.get(f"{server.url}/v1/me/events?after={head}&wait=10", headers=alice) as r:
                assert r.status == 200, await r.text()
                assert draft_id in {e["event"]["draft_id"] for e in (await r.json())["data"]}
