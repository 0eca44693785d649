"""Shared fixtures: a Store of every backend, built fresh per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventstore import Store, open_store
from tests.pgutil import temporary_database

STORE_KINDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open, empty store of each backend (the contract suite runs against all of them)."""
    kind = request.param
    if kind == "postgres":
        async with temporary_database() as url:
            s = open_store(url)
            await s.open()
            try:
                yield s
            finally:
                await s.close()
        return
    s = open_store("memory:" if kind == "memory" else str(tmp_path / "log.db"))
    await s.open()
    try:
        yield s
    finally:
        await s.close()
