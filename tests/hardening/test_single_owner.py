"""Kind: who may write an SQLite log (issue 10, item 11 and "Also"; issue 11).

A second ``ringlog serve`` on a file a running server serves used to start silently, after which
the first served stale state. Issue 10 refused it; issue 11 made it correct (servers share the
file: SQLite serialises appends and each server discovers the others' commits), so servers now
share the lock and a second server serves the same log. The offline writing tools (``rebuild``,
``copy --to``) still own the file alone: they are refused with one line naming the file while
any server runs, and a server is refused while one of them runs. The read-only tools
(``verify``, ``log``, ``replay``) still run. The lock dies with its process: after a clean stop or
a SIGKILL the file can be rebuilt again. All with real ``ringlog serve`` processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.serverproc import TEST_SECRET, ServerProcess

TIMEOUT = 60


def ringlog(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def _second_serve(db: Path) -> subprocess.CompletedProcess[str]:
    return ringlog("serve", "--port", "0", "--db", str(db), "--jwt-secret", TEST_SECRET, "--dev-auth")


def _assert_refused(out: subprocess.CompletedProcess[str], db: Path) -> None:
    assert out.returncode == 1, out  # a failure, not a usage error (docs/API.md "Exit status")
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert str(db) in lines[0] and "in use" in lines[0]
    assert "listening" not in out.stdout


def _http(method: str, url: str, body: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"X-User-Id": "alice", "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read() or b"{}")


def _create_draft(server: ServerProcess) -> str:
    status, payload = _http("POST", f"{server.url}/v1/collab/drafts", {"title": "owned"})
    assert status == 201, payload
    data = payload["data"]
    assert isinstance(data, dict)
    draft_id: str = data["id"]
    return draft_id


def test_a_second_server_shares_the_file_and_the_writing_tools_are_refused_while_one_serves(
    tmp_path: Path,
) -> None:
    db = tmp_path / "owned.db"
    other = tmp_path / "other.db"
    with ServerProcess(
        str(db), "--dev-auth", "--rate-limit", "0", log_path=tmp_path / "server.log"
    ) as server:
        draft_id = _create_draft(server)
        _assert_refused(ringlog("rebuild", "--db", str(db)), db)
        # a copy INTO the served file is refused before anything is opened or written
        assert ringlog("copy", "--from", str(db), "--to", str(other)).returncode == 0
        refused = ringlog("copy", "--from", str(other), "--to", str(db))
        assert refused.returncode == 2 and "in use" in refused.stderr and "Traceback" not in refused.stderr
        # read-only tools run beside the server
        assert ringlog("verify", "--db", str(db)).stdout.startswith("ok: 1 events")
        log = ringlog("log", "--db", str(db), "--draft", draft_id)
        assert log.returncode == 0 and '"collab.draft_created"' in log.stdout
        assert ringlog("replay", "--db", str(db), "--draft", draft_id, "--json").returncode == 0
        # the first server is untouched and still serves
        assert _http("GET", f"{server.url}/v1/collab/drafts/{draft_id}")[0] == 200
        with ServerProcess(str(db), "--dev-auth", log_path=tmp_path / "second.log") as second:
            # the second server serves the same log, and the first sees the second's writes
            assert _http("GET", f"{second.url}/v1/collab/drafts/{draft_id}")[0] == 200
            created = _create_draft(second)
            assert _http("GET", f"{server.url}/v1/collab/drafts/{created}")[0] == 200
            _assert_refused(ringlog("rebuild", "--db", str(db)), db)
    # stopped: the file can be served and rebuilt again
    assert ringlog("rebuild", "--db", str(db)).returncode == 0
    with ServerProcess(str(db), "--dev-auth", log_path=tmp_path / "again.log") as again:
        assert _http("GET", f"{again.url}/healthz")[0] == 200


@pytest.mark.parametrize("end", ["sigterm", "sigkill"])
def test_the_lock_ends_with_its_process_however_it_ends(tmp_path: Path, end: str) -> None:
    db = tmp_path / "crash.db"
    first = ServerProcess(str(db), "--dev-auth", log_path=tmp_path / "first.log").start()
    try:
        _assert_refused(ringlog("rebuild", "--db", str(db)), db)
    finally:
        if end == "sigterm":
            assert first.stop() == 0
        else:
            first.kill()  # a crash: the kernel drops the flock with the process
    assert ringlog("rebuild", "--db", str(db)).returncode == 0
    with ServerProcess(str(db), "--dev-auth", log_path=tmp_path / "second.log") as second:
        assert _http("GET", f"{second.url}/healthz")[0] == 200
        _assert_refused(ringlog("rebuild", "--db", str(db)), db)


def test_a_server_is_refused_while_a_writing_tool_owns_the_file(tmp_path: Path) -> None:
    from eventstore.ownership import acquire_writer_lock

    db = tmp_path / "tool.db"
    with acquire_writer_lock(str(db)):  # what rebuild and copy --to hold while they run
        _assert_refused(_second_serve(db), db)
        _assert_refused(_second_serve_workers(db), db)


def _second_serve_workers(db: Path) -> subprocess.CompletedProcess[str]:
    return ringlog(
        "serve", "--port", "0", "--workers", "2", "--db", str(db), "--jwt-secret", TEST_SECRET, "--dev-auth"
    )


@pytest.mark.parametrize("name", ["symlink", "linked-directory", "relative", "sidecar-deleted"])
def test_every_name_of_the_file_meets_the_same_lock(tmp_path: Path, name: str) -> None:
    """A writing tool reaching the served file by another name is refused all the same."""
    db = tmp_path / "named.db"
    with ServerProcess(str(db), "--dev-auth", log_path=tmp_path / "server.log") as server:
        _create_draft(server)
        if name == "symlink":
            other = tmp_path / "link.db"
            other.symlink_to(db)
        elif name == "linked-directory":
            (tmp_path / "dir-link").symlink_to(tmp_path)
            other = tmp_path / "dir-link" / "named.db"
        elif name == "relative":
            (tmp_path / "sub").mkdir()
            other = tmp_path / "sub" / ".." / "named.db"
        else:
            for sidecar in tmp_path.glob("named.db.lock"):
                sidecar.unlink()
            other = db
        _assert_refused(ringlog("rebuild", "--db", str(other)), other)
        refused = ringlog("copy", "--from", str(tmp_path / "none.db"), "--to", str(other))
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused
        assert _http("GET", f"{server.url}/healthz")[0] == 200


def test_a_hard_linked_database_is_refused_by_every_writer(tmp_path: Path) -> None:
    """SQLite names its WAL after the path: two names of one file would write two WALs."""
    db = tmp_path / "hard.db"
    with ServerProcess(str(db), "--dev-auth", log_path=tmp_path / "server.log") as server:
        _create_draft(server)
    (tmp_path / "second-name.db").hardlink_to(db)
    for path in (db, tmp_path / "second-name.db"):
        for out in (_second_serve(path), ringlog("rebuild", "--db", str(path))):
            assert out.returncode != 0 and "Traceback" not in out.stderr, out
            assert "hard links" in out.stderr and "listening" not in out.stdout, out
