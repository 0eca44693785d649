"""Short variants of ``scripts/chaos_kill.py``: SIGKILL under load, restart, nothing acknowledged lost."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.pgutil import temporary_database

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "chaos_kill.py"


def run_chaos(*args: str) -> dict[str, object]:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--cycles", "3", "--seed", "7", *args],
        capture_output=True, text=True, timeout=100, cwd=ROOT,
    )  # fmt: skip
    lines = run.stdout.strip().splitlines()
    assert lines, run.stderr
    summary: dict[str, object] = orjson.loads(lines[-1])
    assert run.returncode == 0 and "violation" not in summary, (summary, run.stdout, run.stderr[-3000:])
    assert summary["cycles"] == 3
    assert isinstance(summary["acked"], int) and summary["acked"] > 100
    return summary


def test_sqlite_crash_loop_loses_no_acknowledged_append(tmp_path: Path) -> None:
    summary = run_chaos("--db", str(tmp_path / "chaos.db"))
    assert summary["db"] == "sqlite"


def _postgres_backend_available() -> bool:
    return importlib.util.find_spec("eventstore.postgres") is not None


@pytest.mark.postgres
@pytest.mark.skipif(not _postgres_backend_available(), reason="the PostgreSQL backend is not importable yet")
@pytest.mark.parametrize("nodes", ["1", "2"])
async def test_postgres_crash_loop_loses_no_acknowledged_append(nodes: str) -> None:
    async with temporary_database() as url:
        summary = await asyncio.to_thread(run_chaos, "--db", url, "--nodes", nodes)
    assert summary["db"] == "postgresql" and summary["nodes"] == int(nodes)


@pytest.mark.parametrize("mode", [("--workers", "2"), ("--nodes", "2")], ids=["workers", "two-servers"])
def test_sqlite_crash_loop_with_several_processes_loses_no_acknowledged_append(
    tmp_path: Path, mode: tuple[str, str]
) -> None:
    summary = run_chaos("--db", str(tmp_path / "chaos.db"), *mode)
    assert summary["db"] == "sqlite"
    assert summary["workers" if mode[0] == "--workers" else "nodes"] == 2


@pytest.mark.postgres
async def test_postgres_crash_loop_with_workers_loses_no_acknowledged_append() -> None:
    async with temporary_database() as url:
        summary = await asyncio.to_thread(run_chaos, "--db", url, "--workers", "2")
    assert summary["db"] == "postgresql" and summary["workers"] == 2
