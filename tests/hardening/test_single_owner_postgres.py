"""Kind: who may write a PostgreSQL log (review: ``rebuild`` under running servers).

On PostgreSQL nothing used to stop ``ringlog rebuild`` (or ``copy --to``) while servers ran:
``reset_feed`` emptied the feed index under a running FeedProjector, which went on serving reads
up to its in-memory position, so a client's ``GET /v1/me/events`` got an empty page with
last_position = the head and skipped entries for good. Now it is SQLite's rule: serving stores
hold a shared advisory lock on their LISTEN connection, the writing tools take it exclusive and
are refused while any server runs (same one-line message and exit codes as on SQLite), and a
server is refused while a tool holds it. Real ``ringlog serve`` processes, as in
test_single_owner.py; the store-level cases run in-process.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from eventstore import StoreLocked, open_store
from eventstore.ownership import acquire_tool_lock
from projections.feed_index import FeedProjector, rebuild_feed
from tests.pgutil import temporary_database
from tests.projections.feedlog import brute_force_feed, random_history
from tests.serverproc import TEST_SECRET, ServerProcess

pytestmark = pytest.mark.postgres

TIMEOUT = 60


async def ringlog(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line in a child process (in a thread: the test's loop stays free)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "server.cli", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def _db_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _assert_refused(out: subprocess.CompletedProcess[str], url: str) -> None:
    assert out.returncode == 1, out  # a failure, not a usage error (docs/API.md "Exit status")
    assert "Traceback" not in out.stderr
    # a server logs the dev-auth warning while it builds its app, before the store refuses it
    lines = [line for line in out.stderr.splitlines() if line.strip() and "dev auth is ON" not in line]
    assert len(lines) == 1, out.stderr
    assert _db_name(url) in lines[0] and "in use" in lines[0], lines[0]
    assert "listening" not in out.stdout


async def _second_serve(url: str, *more: str) -> subprocess.CompletedProcess[str]:
    return await ringlog(
        "serve", "--port", "0", "--db", url, "--jwt-secret", TEST_SECRET, "--dev-auth", *more
    )


def _create_draft(server: ServerProcess) -> str:
    request = urllib.request.Request(
        f"{server.url}/v1/collab/drafts",
        data=json.dumps({"title": "owned"}).encode(),
        method="POST",
        headers={"X-User-Id": "alice", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
        draft_id: str = json.loads(response.read())["data"]["id"]
    return draft_id


def _status(server: ServerProcess, path: str) -> int:
    request = urllib.request.Request(f"{server.url}{path}", headers={"X-User-Id": "alice"})
    with urllib.request.urlopen(request, timeout=10) as response:
        status: int = response.status
    return status


async def test_the_writing_tools_are_refused_while_servers_run_and_work_after(tmp_path: Path) -> None:
    async with temporary_database() as url, temporary_database() as other:
        args = ("--dev-auth", "--rate-limit", "0", "--pool-size", "2")
        with ServerProcess(url, *args, log_path=tmp_path / "a.log") as server:
            draft_id = await asyncio.to_thread(_create_draft, server)
            refused = await ringlog("rebuild", "--db", url)
            _assert_refused(refused, url)
            assert refused.returncode == 1  # as on SQLite (a StoreError from the tool)
            # a copy INTO the served database is refused; a copy FROM it runs
            assert (await ringlog("copy", "--from", url, "--to", other)).returncode == 0
            into = await ringlog("copy", "--from", other, "--to", url, "--force")
            assert into.returncode == 2 and "in use" in into.stderr and "Traceback" not in into.stderr
            assert (await ringlog("verify", "--db", url)).stdout.startswith("ok: 1 events")
            with ServerProcess(url, *args, log_path=tmp_path / "b.log") as second:
                # two servers share the lock, and each serves the other's writes
                created = await asyncio.to_thread(_create_draft, second)
                assert await asyncio.to_thread(_status, server, f"/v1/collab/drafts/{created}") == 200
                _assert_refused(await ringlog("rebuild", "--db", url), url)
            assert await asyncio.to_thread(_status, server, f"/v1/collab/drafts/{draft_id}") == 200
        # every server stopped: the database can be rebuilt and served again
        assert (await ringlog("rebuild", "--db", url)).returncode == 0
        with ServerProcess(url, *args, log_path=tmp_path / "c.log") as again:
            assert await asyncio.to_thread(_status, again, "/healthz") == 200


async def test_a_killed_server_leaves_no_lock(tmp_path: Path) -> None:
    async with temporary_database() as url:
        server = ServerProcess(url, "--dev-auth", log_path=tmp_path / "a.log").start()
        try:
            _assert_refused(await ringlog("rebuild", "--db", url), url)
        finally:
            server.kill()  # PostgreSQL ends the session, and its lock, when the socket closes
        for _ in range(100):  # the backend notices the closed socket shortly after the kill
            done = await ringlog("rebuild", "--db", url)
            if done.returncode == 0:
                break
            await asyncio.sleep(0.2)
        assert done.returncode == 0, done.stderr


async def test_a_server_is_refused_while_a_writing_tool_holds_the_database() -> None:
    async with temporary_database() as url:
        lock = await acquire_tool_lock(url)  # what rebuild and copy --to hold while they run
        try:
            out = await _second_serve(url)
            _assert_refused(out, url)
            assert out.returncode == 1  # as on SQLite: a store held by a tool cannot be opened
            with pytest.raises(StoreLocked):  # a second tool too
                await acquire_tool_lock(url)
        finally:
            await lock.release()
        again = await acquire_tool_lock(url)
        await again.release()


async def test_a_rebuild_while_a_serving_store_runs_is_refused_and_changes_nothing() -> None:
    """The review's case on PostgreSQL: the feed index is not reset under a serving projector."""
    async with temporary_database() as url:
        serving = open_store(url, shared=True, pool_size=2)
        await serving.open()
        try:
            await random_history(serving, 60, 7)
            projector = FeedProjector(serving)
            await projector.advance()
            expected = await brute_force_feed(serving)
            user = max(expected, key=lambda u: len(expected[u]))
            before = await projector.read(user, 0, 1000)
            with pytest.raises(StoreLocked):
                await acquire_tool_lock(url)
            out = await ringlog("rebuild", "--db", url)
            assert out.returncode == 1 and "in use" in out.stderr
            items, last = await projector.read(user, 0, 1000)
            assert (items, last) == before
            assert [i.position for i in items] == sorted(expected[user])
        finally:
            await serving.close()
        # the server stopped: the rebuild runs and rebuilds the same feed
        lock = await acquire_tool_lock(url)
        try:
            tool = open_store(url, pool_size=2)
            await tool.open()
            try:
                await rebuild_feed(tool)
                rebuilt = FeedProjector(tool)
                await rebuilt.advance()
                items, _ = await rebuilt.read(user, 0, 1000)
                assert [i.position for i in items] == sorted(expected[user])
            finally:
                await tool.close()
        finally:
            await lock.release()
