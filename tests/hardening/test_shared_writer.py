"""Kind: one request's bad data must never reach the shared writer (issue 10, item 3).

Concurrent appends share one group-commit transaction on the SQL stores. A value that no store
can keep (a lone surrogate or NUL in a stream id or idempotency key, data that is not JSON,
integers beyond 64 bits) is refused to its own caller, before it is queued, with
``UnrepresentableValue``; the good appends around it all commit. And if an append still fails
inside a group's transaction, only that append fails: the others are committed one by one.
Run on every store (memory, SQLite, PostgreSQL).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from eventstore import IdempotencyClaim, NewEvent, Store, UnrepresentableValue
from eventstore.events import POSITION_PLACEHOLDER
from eventstore.postgres import PostgresStore
from eventstore.sqlite import SQLiteStore
from eventstore.verify import verify_log
from tests.eventstore.helpers import TS, append_retrying, created, segment
from tests.pgutil import temporary_database

BAD_TEXT = [
    "\ud800",  # a lone high surrogate (e.g. from a JWT "sub" of "\\ud800")
    "user\udcff",  # a surrogate-escaped invalid UTF-8 byte (X-User-Id 0xFF decoded with surrogateescape)
    "a\x00b",  # NUL: PostgreSQL's text refuses it
    "\x00",
    "\udfff\ud800",
]


class Unjsonable:
    """An object orjson cannot serialise."""


def _bad_data() -> list[dict[str, Any]]:
    return [
        {"title": "x", "n": 2**64},  # beyond 64 bits
        {"title": "x", "n": -(2**63) - 1},
        {"title": "\ud800"},
        {"title": "x", "obj": Unjsonable()},
        {"title": "x", "s": {1, 2}},
        {"title": "x", 3: "non-string key"},
        {"title": "x", "f": float("nan")},  # orjson writes null: storable, so this one is good
    ]


def _bad_appends() -> list[tuple[str, Callable[[Store], Any]]]:
    """(label, call) pairs whose call must fail with UnrepresentableValue alone."""
    cases: list[tuple[str, Callable[[Store], Any]]] = []
    for n, text in enumerate(BAD_TEXT):
        cases.append((f"stream id {text!r}", lambda s, t=text: s.append(t, [created()], 0)))
        cases.append(
            (
                f"claim user {text!r}",
                lambda s, t=text, n=n: s.append(
                    f"claim-user-{n}", [created()], 0, IdempotencyClaim(t, "k", "fp")
                ),
            )
        )
        cases.append(
            (
                f"claim key {text!r}",
                lambda s, t=text, n=n: s.append(
                    f"claim-key-{n}", [created()], 0, IdempotencyClaim("u", t, "fp")
                ),
            )
        )
        cases.append(
            (
                f"event type {text!r}",
                lambda s, t=text, n=n: s.append(f"type-{n}", [NewEvent(t, "u", TS, {})], 0),
            )
        )
    for n, data in enumerate(_bad_data()[:-1]):
        cases.append(
            (
                f"data {n}",
                lambda s, d=data, n=n: s.append(
                    f"data-{n}", [NewEvent("collab.draft_updated", "u", TS, d)], 0
                ),
            )
        )
    cases.append(("user id in body", lambda s: s.append("body-user", [created("\ud800")], 0)))
    return cases


async def test_bad_appends_fail_alone_beside_concurrent_good_ones(store: Store) -> None:
    await store.append("hot", [created()], 0)
    bad = _bad_appends()
    good_creates = [store.append(f"good-{i}", [created(f"user{i}")], 0) for i in range(30)]
    good_segments = [append_retrying(store, "hot", segment()) for _ in range(30)]
    outcomes = await asyncio.gather(
        *[call(store) for _, call in bad], *good_creates, *good_segments, return_exceptions=True
    )
    bad_outcomes = outcomes[: len(bad)]
    for (label, _), outcome in zip(bad, bad_outcomes, strict=True):
        assert isinstance(outcome, UnrepresentableValue), f"{label}: {outcome!r}"
        assert "\x00" not in str(outcome) and str(outcome).isprintable(), label
    good = outcomes[len(bad) :]
    errors = [o for o in good if isinstance(o, BaseException)]
    assert errors == []
    assert await store.head("hot") == 31
    for i in range(30):
        assert await store.head(f"good-{i}") == 1
    assert await store.last_position() == 1 + 30 + 30
    report = await verify_log(store)
    assert report.ok, report.problem


async def test_storable_oddities_are_accepted_on_every_store(store: Store) -> None:
    """NUL and control characters inside event data are JSON-escaped: every store keeps them."""
    data = {"title": "nul \x00 and \x01\x7f\u2028 and nan", "f": float("nan"), "big": 2**63 - 1}
    result = await store.append(
        "odd \x01\x7f\u2028 id", [NewEvent("collab.draft_updated", "u\x01", TS, data)], 0
    )
    (record,) = await store.read("odd \x01\x7f\u2028 id")
    assert record == result.records[0]
    assert record.envelope()["data"]["title"] == data["title"]
    assert record.envelope()["data"]["f"] is None


@asynccontextmanager
async def _writer_held(store: Store) -> AsyncIterator[Callable[[], None]]:
    """Hold the store's write lock from outside (a second connection), until ``release()``.

    The writer's next transaction waits for it, so appends submitted meanwhile queue up and are
    committed as ONE group once it is released.
    """
    if isinstance(store, SQLiteStore):
        conn = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN IMMEDIATE")
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                conn.execute("ROLLBACK")

        try:
            yield release
        finally:
            release()
            conn.close()
        return
    assert isinstance(store, PostgresStore)
    pg = await asyncpg.connect(store.url)
    tx = pg.transaction()
    await tx.start()
    await pg.execute("SELECT position FROM log_head FOR UPDATE")
    loop = asyncio.get_running_loop()
    done: list[asyncio.Task[None]] = []

    def release_pg() -> None:
        if not done:
            done.append(loop.create_task(tx.rollback()))

    try:
        yield release_pg
    finally:
        release_pg()
        await done[0]
        await pg.close()


async def _until(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(2000):  # well inside SQLite's 5 s busy timeout
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"timed out waiting until {what}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open, empty store of each backend with a group-commit writer."""
    if request.param == "postgres":
        async with temporary_database() as url:
            pg = PostgresStore(url, pool_size=4)
            await pg.open()
            try:
                yield pg
            finally:
                await pg.close()
        return
    lite = SQLiteStore(tmp_path / "log.db")
    await lite.open()
    try:
        yield lite
    finally:
        await lite.close()


async def test_an_append_that_fails_inside_a_group_fails_alone(
    sql_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """The backstop: an event whose data turns bad after it was checked (the caller mutated it
    while it waited in the queue) fails inside the group's transaction; the group is committed
    again append by append and every other append of it is written."""
    store = sql_store
    await store.append("hot", [created()], 0)
    committer = store._committer  # type: ignore[attr-defined]
    async with _writer_held(store) as release:
        blocker = asyncio.create_task(store.append("blocker", [created()], 0))
        # the writer takes the blocker alone and waits for the lock with it; the appends below
        # then queue for the NEXT group, which the writer encodes only after the release
        await _until(
            lambda: committer.in_flight == 1 and committer.pending == 0, "the writer holds the blocker"
        )
        shared: dict[str, Any] = {
            "id": 0,
            "author_user_id": "u",
            "content": "c",
            "position": 1,
            "created_at": TS,
            # the SQLite writer fills the position into the bytes encoded at submit unless the
            # placeholder's text occurs twice in them: then it encodes the event again, as PostgreSQL's does
            "note": str(POSITION_PLACEHOLDER),
        }
        bad_event = NewEvent("collab.segment_added", "u", TS, {"segment": shared}, ("segment", "id"))
        tasks = [asyncio.create_task(store.append(f"g-{i}", [created()], 0)) for i in range(20)]
        tasks.append(asyncio.create_task(store.append("hot", [bad_event], 1)))
        tasks += [asyncio.create_task(store.append(f"h-{i}", [created()], 0)) for i in range(20)]
        # checked and queued (the writer, busy with the blocker, encodes them only after release)
        await _until(lambda: committer.in_flight == 42, "every append is queued behind the held lock")
        shared["content"] = Unjsonable()  # checked at submit; the writer encodes it again with its position
        with caplog.at_level(logging.WARNING, logger="eventstore.groupcommit"):
            release()
            outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
            await asyncio.wait_for(blocker, 30)
    assert isinstance(outcomes[20], UnrepresentableValue), outcomes[20]
    others = outcomes[:20] + outcomes[21:]
    assert [o for o in others if isinstance(o, BaseException)] == []
    assert "committing them one by one" in caplog.text
    assert await store.head("hot") == 1
    assert await store.last_position() == 1 + 1 + 40
    assert (await verify_log(store)).ok
