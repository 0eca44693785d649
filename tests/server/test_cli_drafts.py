"""``ringlog drafts --db D``: find a draft id with the server stopped, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from eventstore import NewEvent, Store, open_store
from projections.event_types import EventType
from projections.fold import fold_log
from tests.hardening.cliproc import ringlog
from tests.pgutil import temporary_database
from tests.projections.drafting import populate

TS = "2025-01-01T00:00:00.000Z"


async def _expected(store: Store) -> list[dict[str, object]]:
    states = fold_log([r.event() for r in await store.read_all(0, 1_000_000)])
    rows = sorted(states.values(), key=lambda s: (s.updated_at, s.id), reverse=True)
    return [
        {"id": s.id, "title": s.title, "seq": s.seq, "updated_at": s.updated_at, "archived": s.archived}
        for s in rows
    ]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A stopped server's database (closed before the command runs), with drafts in it."""
    if request.param == "postgres":
        async with temporary_database() as url:
            yield url
        return
    yield str(tmp_path / "ringlog.db")


async def _fill(url: str, drafts: int) -> list[dict[str, object]]:
    store = open_store(url)
    await store.open()
    try:
        if drafts:
            await populate(store, drafts=drafts, steps=40, seed=5)
        # a title no table may print raw: it must stay one line
        created = {"title": "line one\nline\ttwo\x1b[31m", "description": "", "creator_id": "eve"}
        await store.append("draft_odd", [NewEvent(EventType.DRAFT_CREATED, "eve", TS, created)], 0)
        return await _expected(store)
    finally:
        await store.close()


async def test_json_lines_are_the_fold_of_the_log(db: str) -> None:
    expected = await _fill(db, drafts=5)
    out = await asyncio.to_thread(ringlog, "drafts", "--db", db, "--json")
    assert out.returncode == 0, out.stderr
    rows = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert rows == expected
    assert len(rows) == 6 and rows[-1]["id"] == "draft_odd"  # oldest update last


async def test_the_table_has_one_line_per_draft(db: str) -> None:
    expected = await _fill(db, drafts=3)
    out = await asyncio.to_thread(ringlog, "drafts", "--db", db)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert lines[0].split() == ["ID", "TITLE", "ARCHIVED", "SEQ", "UPDATED"]
    assert len(lines) == 1 + len(expected)
    for line, row in zip(lines[1:], expected, strict=True):
        assert line.startswith(str(row["id"]) + " ")
        assert line.rstrip().endswith(f"{row['seq']}  {row['updated_at']}")
    odd = lines[-1]
    assert "\\n" in odd and "\\t" in odd and "\x1b" not in odd


async def test_an_empty_log_lists_nothing(db: str) -> None:
    store = open_store(db)
    await store.open()
    await store.close()
    table = await asyncio.to_thread(ringlog, "drafts", "--db", db)
    assert table.returncode == 0 and table.stdout == b"" and b"no drafts" in table.stderr
    lines = await asyncio.to_thread(ringlog, "drafts", "--db", db, "--json")
    assert lines.returncode == 0 and lines.stdout == b""


async def test_archived_drafts_are_listed_and_marked(tmp_path: Path) -> None:
    db = str(tmp_path / "a.db")
    store = open_store(db)
    await store.open()
    try:
        for draft_id in ("draft_kept", "draft_away"):
            created = {"title": draft_id, "description": "", "creator_id": "eve"}
            await store.append(draft_id, [NewEvent(EventType.DRAFT_CREATED, "eve", TS, created)], 0)
        await store.append("draft_away", [NewEvent(EventType.DRAFT_ARCHIVED, "eve", TS, {})], 1)
    finally:
        await store.close()
    out = await asyncio.to_thread(ringlog, "drafts", "--db", db)
    assert out.returncode == 0, out.stderr
    marks = {line.split()[0]: line.split()[2] for line in out.stdout.decode().splitlines()[1:]}
    assert marks == {"draft_kept": "no", "draft_away": "yes"}
    out = await asyncio.to_thread(ringlog, "drafts", "--db", db, "--json")
    rows = {r["id"]: r["archived"] for r in map(orjson.loads, out.stdout.splitlines())}
    assert rows == {"draft_kept": False, "draft_away": True}
