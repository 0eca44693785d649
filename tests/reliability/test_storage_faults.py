"""Storage faults under a running server: read-only file, disk full, database locked by another process.

Each one: appends answer 503 ``unavailable`` with Retry-After (never 500), the log names why, the
server recovers by itself once the fault clears, and ``ringlog verify`` passes afterwards with
exactly the acknowledged appends in the log.

Root ignores file modes, so "read-only" is made with ``chattr +i`` on the database and its WAL
(never the ``-shm`` file: SQLite maps it, and writes to an immutable mapping kill the process with
SIGBUS). "Disk full" is a small tmpfs the test mounts (skipped where mount is not permitted).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.serverproc import ServerProcess

TIMEOUT = aiohttp.ClientTimeout(total=30)
ROOT = Path(__file__).resolve().parents[2]


class Client:
    def __init__(self, srv: ServerProcess, http: aiohttp.ClientSession) -> None:
        self.srv = srv
        self.http = http
        self.acked: list[str] = []
        self.draft = ""

    async def call(
        self, method: str, path: str, body: Any = None, key: str | None = None
    ) -> tuple[int, Any, Any]:
        headers = {"X-User-Id": "owner"} | ({"Idempotency-Key": key} if key else {})
        async with self.http.request(method, self.srv.url + path, json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None), r.headers

    async def create(self) -> None:
        status, body, _ = await self.call("POST", "/v1/collab/drafts", {"title": "faults"})
        assert status == 201, body
        self.draft = body["data"]["id"]

    async def append(self, content: str) -> tuple[int, Any, Any]:
        status, body, headers = await self.call(
            "POST", f"/v1/collab/drafts/{self.draft}/segments", {"content": content}, key=content
        )
        if status == 201:
            self.acked.append(content)
        return status, body, headers

    async def expect_unavailable(self, content: str) -> None:
        status, body, headers = await self.append(content)
        assert status == 503, (status, body)
        assert body["error"]["code"] == "unavailable", body
        assert "Retry-After" in headers
        # reads keep working (or say 503 too): never a 500
        status, body, _ = await self.call("GET", f"/v1/collab/drafts/{self.draft}")
        assert status in (200, 503), (status, body)

    async def expect_recovery(self, content: str) -> None:
        """Bounded polling: the first append after the fault clears may still meet it."""
        deadline = time.monotonic() + 20
        while True:
            status, body, _ = await self.append(content)
            if status == 201:
                return
            assert status == 503, (status, body)
            assert time.monotonic() < deadline, "the server did not recover after the fault cleared"
            await _pause()

    async def check_log(self) -> None:
        status, body, _ = await self.call("GET", f"/v1/collab/drafts/{self.draft}")
        assert status == 200, body
        contents = [s["content"] for s in body["data"]["segments"]]
        assert contents == self.acked, (contents, self.acked)
        status, events, _ = await self.call("GET", f"/v1/collab/drafts/{self.draft}/events?since=0")
        assert [e["seq"] for e in events["data"]] == list(range(1, body["data"]["seq"] + 1))


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.2)  # polling a fault clearing: nothing to await


def verify(db: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "server.cli", "verify", "--db", db],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, (run.stdout, run.stderr)


@contextlib.contextmanager
def running(db: Path, log: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(str(db), "--dev-auth", "--rate-limit", "0", log_path=log)
    with srv:
        yield srv
        assert srv.stop() == 0


async def fault_cycle(db: Path, log: Path, inject: Callable[[], None], clear: Callable[[], None]) -> str:
    """Appends before, during and after the fault; returns the server's log."""
    with running(db, log) as srv:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            client = Client(srv, http)
            await client.create()
            for i in range(3):
                assert (await client.append(f"before-{i}"))[0] == 201
            inject()
            try:
                for i in range(2):
                    await client.expect_unavailable(f"during-{i}")
            finally:
                clear()
            await client.expect_recovery("after-0")
            for i in range(1, 3):
                assert (await client.append(f"after-{i}"))[0] == 201
            await client.check_log()
    verify(str(db))
    text = log.read_text(errors="replace")
    assert "unhandled error" not in text, text[-2000:]
    return text


def _chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


async def test_read_only_database_file(tmp_path: Path) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    db = tmp_path / "ro.db"
    files = [db, Path(f"{db}-wal")]
    try:
        text = await fault_cycle(
            db, tmp_path / "server.log", lambda: _chattr("+i", *files), lambda: _chattr("-i", *files)
        )
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _chattr("-i", *[f for f in files if f.exists()])
    assert "SQLite write failed" in text, text[-2000:]


async def test_database_locked_by_another_process(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    holder: list[sqlite3.Connection] = []

    def lock() -> None:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        holder.append(conn)

    def unlock() -> None:
        conn = holder.pop()
        conn.execute("ROLLBACK")
        conn.close()

    text = await fault_cycle(db, tmp_path / "server.log", lock, unlock)
    assert "database is locked" in text, text[-2000:]


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    run = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if run.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {run.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_disk_full(small_tmpfs: Path, tmp_path: Path) -> None:
    db = small_tmpfs / "full.db"
    filler = small_tmpfs / "filler"

    def fill() -> None:
        with open(filler, "wb", buffering=0) as f:
            chunk = b"\0" * 65536
            for _ in range(1000):  # 64 MiB at most; the file system holds 4
                try:
                    f.write(chunk)
                except OSError:
                    return
        raise AssertionError("the tmpfs did not fill up")

    text = await fault_cycle(db, tmp_path / "server.log", fill, filler.unlink)
    assert "database or disk is full" in text, text[-2000:]
