"""PostgreSQL helpers for tests: a throw-away database per test, or a clear skip."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

ADMIN_URL = os.environ.get("RINGLOG_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


async def _admin_connection() -> Any:
    import asyncpg

    try:
        return await asyncpg.connect(ADMIN_URL, timeout=3)
    except (OSError, asyncpg.PostgresError) as e:
        if os.environ.get("CI"):
            raise RuntimeError(f"PostgreSQL must be reachable in CI at {ADMIN_URL}: {e}") from e
        pytest.skip(f"PostgreSQL not reachable at {ADMIN_URL} ({e}); set RINGLOG_TEST_PG to run these tests")


@asynccontextmanager
async def temporary_database() -> AsyncIterator[str]:
    """Create a fresh database, yield its URL, drop it afterwards."""
    name = "ringlog_test_" + uuid.uuid4().hex[:12]
    admin = await _admin_connection()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        admin = await _admin_connection()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
