"""Both SQL backends map their drivers' errors to the same domain errors (issue 12, item 3).

Each backend has ONE mapping (``_store_error``). The faults below are produced by the real
drivers (a trigger refusing an insert, a value the driver cannot bind, a dead connection) and
must mean the same on SQLite and PostgreSQL: ``LogCorrupted``, ``UnrepresentableValue``,
``StoreUnavailable``, each raised ``from`` the driver's error by the backends' context managers.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest

from eventstore import LogCorrupted, StoreError, StoreUnavailable, UnrepresentableValue
from eventstore import postgres as pg_backend
from eventstore import sqlite as sqlite_backend
from eventstore.events import GENESIS_HASH, build_records
from eventstore.sql import RECORD_COLUMNS, record_row
from tests.eventstore.helpers import created
from tests.pgutil import temporary_database

FAULTS = ["schema-refusal", "unbindable-text", "int-beyond-64-bits", "storage-gone"]


def _sqlite_fault(tmp_path: Path, fault: str) -> BaseException:
    path = tmp_path / "faults.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(sqlite_backend.SCHEMA)
    (stray,) = build_records("d", [created()], 4, 9, GENESIS_HASH, None)  # seq 5, position 10
    statements = {
        "schema-refusal": (
            f"INSERT INTO events ({RECORD_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
            record_row(stray),
        ),
        "unbindable-text": ("SELECT * FROM events WHERE draft_id = ?", ("\ud800",)),
        "int-beyond-64-bits": ("SELECT * FROM events WHERE seq > ?", (2**64,)),
        "storage-gone": ("SELECT * FROM events", ()),
    }
    sql, params = statements[fault]
    if fault == "storage-gone":
        conn.close()
    try:
        conn.execute(sql, params)
    except Exception as e:
        return e
    finally:
        conn.close()
    raise AssertionError(f"SQLite accepted {fault}")


async def _pg_fault(url: str, fault: str) -> BaseException:
    store = pg_backend.PostgresStore(url, pool_size=1, listen=False, poll_interval=0)
    await store.open()  # creates the schema
    await store.close()
    conn = await asyncpg.connect(url)
    (stray,) = build_records("d", [created()], 4, 9, GENESIS_HASH, None)
    statements = {
        "schema-refusal": (
            f"INSERT INTO events ({RECORD_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
            record_row(stray),
        ),
        "unbindable-text": ("SELECT * FROM events WHERE draft_id = $1", ("a\x00b",)),
        "int-beyond-64-bits": ("SELECT * FROM events WHERE seq > $1", (2**64,)),
        "storage-gone": ("SELECT 1", ()),
    }
    sql, params = statements[fault]
    if fault == "storage-gone":
        await conn.close()
    try:
        await conn.execute(sql, *params)
    except Exception as e:
        return e
    finally:
        if not conn.is_closed():
            await conn.close()
    raise AssertionError(f"PostgreSQL accepted {fault}")


EXPECTED: dict[str, type[StoreError]] = {
    "schema-refusal": LogCorrupted,
    "unbindable-text": UnrepresentableValue,
    "int-beyond-64-bits": UnrepresentableValue,
    "storage-gone": StoreUnavailable,
}


@pytest.mark.postgres
@pytest.mark.parametrize("fault", FAULTS)
async def test_both_backends_give_one_fault_one_meaning(tmp_path: Path, fault: str) -> None:
    lite = sqlite_backend._store_error(_sqlite_fault(tmp_path, fault), "test")
    async with temporary_database() as url:
        post = pg_backend._store_error(await _pg_fault(url, fault), "test")
    assert type(lite) is type(post) is EXPECTED[fault], (lite, post)


@pytest.mark.parametrize("fault", FAULTS)
def test_mapped_errors_raise_from_the_driver_error(tmp_path: Path, fault: str) -> None:
    original = _sqlite_fault(tmp_path, fault)
    with pytest.raises(EXPECTED[fault]) as info, sqlite_backend._mapped_errors("test"):
        raise original
    assert info.value.__cause__ is original


def test_errors_that_are_not_the_storage_s_pass_through() -> None:
    """A bug is not a storage fault: the mapping leaves it for the writer to report."""
    with pytest.raises(KeyError), sqlite_backend._mapped_errors("test"):
        raise KeyError("a bug")
    with pytest.raises(KeyError), pg_backend._mapped_errors("test"):
        raise KeyError("a bug")
