"""``ringlog copy`` between SQLite and PostgreSQL, through the real command line.

SQLite → PostgreSQL → SQLite must give byte-identical ``ringlog log`` output for every draft,
with idempotency keys kept, and ``ringlog verify`` must pass on each target.
"""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import pytest

from eventstore import IdempotencyClaim, Store, open_store
from projections.decide import (
    AddCollaborator,
    AppendSegment,
    Command,
    CreateDraft,
    PassRing,
    UpdateDraft,
    decide,
)
from projections.fold import fold_all
from server.copy_command import copy_log
from tests.eventstore.helpers import TS
from tests.pgutil import temporary_database

pytestmark = pytest.mark.postgres

DRAFTS = ["draft_one", "draft_two", "draft_three"]


async def _write_sample_log(store: Store) -> None:
    """A few drafts built by the real rules, interleaved, some appends with idempotency keys."""
    scripts: dict[str, list[Command]] = {}
    for n, draft_id in enumerate(DRAFTS):
        scripts[draft_id] = [
            CreateDraft("alice", draft_id, f"Draft {n}", "about it"),
            AddCollaborator("alice", "bob", "contributor"),
            AddCollaborator("alice", "carol", "viewer"),
            AppendSegment("alice", f"first words of {draft_id}"),
            PassRing("alice", "bob"),
            AppendSegment("bob", 'ünïcödé ✓ and "quotes"'),
            UpdateDraft("bob", title=f"Draft {n} (edited)"),
            PassRing("bob", "alice"),
            AppendSegment("alice", "last words"),
        ]
    step = 0
    while any(scripts.values()):
        for draft_id in DRAFTS:
            if not scripts[draft_id]:
                continue
            command = scripts[draft_id].pop(0)
            records = await store.read(draft_id)
            state = fold_all(None, [r.event() for r in records])
            events = decide(state, command, TS)
            claim = IdempotencyClaim(command.user_id, f"key-{step}", f"fp-{step}") if step % 3 == 0 else None
            await store.append(draft_id, events, len(records), claim)
            step += 1


async def _ringlog(*args: str) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out, err


async def _logs(db: str) -> dict[str, bytes]:
    logs: dict[str, bytes] = {}
    for draft_id in DRAFTS:
        code, out, err = await _ringlog("log", "--db", db, "--draft", draft_id)
        assert code == 0, err
        logs[draft_id] = out
    return logs


async def _claims(db: str) -> list[object]:
    store = open_store(db)
    await store.open()
    try:
        return [
            await store.find_idempotency(user, f"key-{step}")
            for step in range(27)
            for user in ("alice", "bob")
        ]
    finally:
        await store.close()


async def test_sqlite_to_postgres_to_sqlite_round_trip(tmp_path: Path) -> None:
    source = str(tmp_path / "source.db")
    back = str(tmp_path / "back.db")
    store = open_store(source)
    await store.open()
    try:
        await _write_sample_log(store)
    finally:
        await store.close()
    original = await _logs(source)
    assert all(original.values())

    async with temporary_database() as pg:
        code, _, err = await _ringlog("copy", "--from", source, "--to", pg)
        assert code == 0, err
        assert b"verify ok" in err
        code, out, err = await _ringlog("verify", "--db", pg)
        assert code == 0, err
        assert out.startswith(b"ok: 27 events in 3 drafts")
        assert await _logs(pg) == original
        assert await _claims(pg) == await _claims(source)

        # The projections were rebuilt on the target: one snapshot per draft, at its head.
        target = open_store(pg)
        await target.open()
        try:
            for draft_id in DRAFTS:
                snap = await target.load_snapshot(draft_id)
                assert snap is not None and snap.seq == await target.head(draft_id)
            assert await target.snapshot_checkpoint() == await target.last_position()
        finally:
            await target.close()

        # A non-empty target is refused, and nothing is written to it.
        code, _, err = await _ringlog("copy", "--from", source, "--to", pg)
        assert code == 2
        assert b"not empty" in err

        code, _, err = await _ringlog("copy", "--from", pg, "--to", back)
        assert code == 0, err
    code, _, err = await _ringlog("verify", "--db", back)
    assert code == 0, err
    assert await _logs(back) == original
    assert await _claims(back) == await _claims(source)


async def test_force_resumes_a_copy_that_holds_a_prefix_and_refuses_a_different_log(tmp_path: Path) -> None:
    source = str(tmp_path / "source.db")
    store = open_store(source)
    await store.open()
    try:
        await _write_sample_log(store)
        prefix = await store.read_all(0, 10)
        total = await store.last_position()
    finally:
        await store.close()

    async with temporary_database() as pg:
        target = open_store(pg)
        await target.open()
        try:
            await target.import_records(prefix)  # type: ignore[attr-defined]
        finally:
            await target.close()
        out = io.StringIO()
        assert await copy_log(source, pg, out=out) == 2
        assert "not empty (10 events)" in out.getvalue()
        out = io.StringIO()
        assert await copy_log(source, pg, force=True, out=out) == 0, out.getvalue()
        assert f"copied {total - 10} events (resumed after 10)" in out.getvalue()

        other = str(tmp_path / "other.db")
        store = open_store(other)
        await store.open()
        try:
            await store.append("someone_else", decide(None, CreateDraft("zed", "someone_else", "Z"), TS), 0)
        finally:
            await store.close()
        out = io.StringIO()
        assert await copy_log(other, pg, force=True, out=out) == 2
        assert "differs from the source at position 1" in out.getvalue()


async def test_copy_refuses_an_unreachable_target_a_missing_source_and_the_same_store(tmp_path: Path) -> None:
    source = str(tmp_path / "source.db")
    out = io.StringIO()
    assert await copy_log(source, str(tmp_path / "target.db"), out=out) == 2
    assert "no SQLite database" in out.getvalue()
    assert not (tmp_path / "source.db").exists()
    store = open_store(source)
    await store.open()
    await store.close()
    out = io.StringIO()
    assert await copy_log(source, source, out=out) == 2
    assert "same store" in out.getvalue()
    out = io.StringIO()
    assert await copy_log(source, "postgresql://postgres@127.0.0.1:1/nowhere", out=out) == 2
    assert "cannot open" in out.getvalue()
