"""The drafts state machine of test_state_machine.py, with PostgreSQL beside the in-memory store.

Every step runs through decide() on both backends; after each step the projector equals the
fold of the log, verify passes, and the two logs are byte-identical (positions, bodies, hashes).
One throw-away database serves the whole test; each example starts from an empty schema.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from eventstore import Store
from eventstore.memory import MemoryStore
from eventstore.postgres import PostgresStore
from tests.pgutil import temporary_database
from tests.projections.test_state_machine import DraftsMachine

pytestmark = pytest.mark.postgres


class PostgresDraftsMachine(DraftsMachine):
    url = ""
    """Set by the test to its throw-away database before the machine runs."""

    def make_stores(self) -> list[Store]:
        self.run(self._empty_database())
        return [MemoryStore(), PostgresStore(self.url, pool_size=2, poll_interval=0.2)]

    async def _empty_database(self) -> None:
        # the log refuses DELETE and TRUNCATE, so a fresh example gets a fresh schema instead
        conn = await asyncpg.connect(self.url, timeout=5)
        try:
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        finally:
            await conn.close()


async def test_drafts_machine_on_postgres() -> None:
    async with temporary_database() as url:
        PostgresDraftsMachine.url = url
        # the machine runs its own event loop, so it runs in a thread beside this test's loop
        await asyncio.to_thread(
            run_state_machine_as_test,
            PostgresDraftsMachine,
            settings=settings(
                max_examples=15,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
                database=None,
            ),
        )
