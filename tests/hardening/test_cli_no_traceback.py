"""Kind: the CLI never shows a traceback (issue "Hardening", item 9).

Every subcommand, given what a careless operator gives it (a URL without a scheme, a port where
nothing listens, a missing file, a file that is not SQLite, a directory, an unknown draft, an
unreachable or malformed PostgreSQL URL), ends with one line on stderr and a clear status:
2 for usage, 1 for failures. ``tail`` says what it is waiting for while it waits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventstore.sqlite import SQLiteStore
from ringlog import RinglogClient
from tests.hardening.cliproc import Lines, ringlog, running
from tests.pgutil import temporary_database
from tests.projections.drafting import populate
from tests.serverproc import ServerProcess

TOOLS = ["replay", "log", "verify", "rebuild", "drafts"]


def _args(command: str, db: str) -> list[str]:
    return [command, "--db", db, *(["--draft", "draft_0"] if command in ("replay", "log") else [])]


def _assert_one_line(stderr: bytes) -> None:
    text = stderr.decode()
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, text  # the message (and, when unexpected, where --debug is)
    assert all(line.startswith("ringlog") for line in lines), text


@pytest.fixture(scope="module")
def sound_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sound") / "ringlog.db"

    async def build() -> None:
        store = SQLiteStore(path)
        await store.open()
        try:
            await populate(store, drafts=2, steps=20, seed=3)
        finally:
            await store.close()

    asyncio.run(build())
    return path


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that is bound but never listens: every connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


# -- tail: URLs ------------------------------------------------------------------------------

BAD_URLS = [
    "127.0.0.1:8000",
    "localhost:8000",
    "localhost",
    "ws://127.0.0.1:8000",
    "wss://example.org",
    "ftp://127.0.0.1",
    "file:///etc/passwd",
    "http://",
    "https://",
    "http:///path",
    "http://a b",
    "http://127.0.0.1:99999",
    "http://127.0.0.1:-1",
    "http://127.0.0.1:port",
    "http://[::1",
    "http://127.0.0.1:8000?x=1",
    "http://127.0.0.1:8000#frag",
    " http://127.0.0.1:8000",
    "http://127.0.0.1:8000\t",
    "http://127.0.0.1\x01:8000",
    "",
    "//127.0.0.1:8000",
    "²://x",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_tail_refuses_a_bad_url_at_once(url: str) -> None:
    out = ringlog("tail", "--url", url, "--draft", "d", "--user-id", "alice", timeout=30)
    assert out.returncode == 2, out.stderr
    assert out.stdout == b""
    _assert_one_line(out.stderr)
    assert b"--url" in out.stderr and b"http://" in out.stderr


def test_tail_at_a_port_where_nothing_listens_says_what_it_waits_for(refused_port: int) -> None:
    url = f"http://127.0.0.1:{refused_port}"
    with running("tail", "--url", url, "--draft", "d", "--user-id", "alice") as proc:
        assert proc.stderr is not None
        err = Lines(proc.stderr)
        assert f"connecting to {url}" in err.next()
        first = err.until("not reachable")
        assert url in first and "retrying in" in first
        second = err.until("not reachable")  # it keeps trying, with backoff, and keeps saying so
        assert "retrying in" in second
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert "Traceback" not in "\n".join(err.seen)


# -- tail against a real server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("tailsrv")
    with ServerProcess(str(tmp / "s.db"), "--dev-auth", "--rate-limit", "0", log_path=tmp / "s.log") as proc:
        yield proc


@pytest.fixture(scope="module")
def draft_id(server: ServerProcess) -> str:
    async def create() -> str:
        async with RinglogClient(server.url, user_id="alice") as alice:
            return (await alice.create_draft("Tail me")).id

    return asyncio.run(create())


@pytest.mark.parametrize(
    ("draft", "who", "code"),
    [
        ("draft_does_not_exist", "alice", b"not_found"),
        ("../../etc", "alice", b"not_found"),
        ("a?b=c", "alice", b"not_found"),
        (None, "mallory", b"forbidden"),
    ],
)
def test_tail_refused_ends_with_one_line_and_status_1(
    server: ServerProcess, draft_id: str, draft: str | None, who: str, code: bytes
) -> None:
    out = ringlog("tail", "--url", server.url, "--draft", draft or draft_id, "--user-id", who, timeout=60)
    assert out.returncode == 1, out.stderr
    assert code in out.stderr and b"Traceback" not in out.stderr


def test_tail_reports_live_then_exits_zero(server: ServerProcess, draft_id: str) -> None:
    with running("tail", "--url", server.url + "/", "--draft", draft_id, "--user-id", "alice") as proc:
        assert proc.stderr is not None and proc.stdout is not None
        err = Lines(proc.stderr)
        err.until("live")
        assert '"seq":1' in Lines(proc.stdout).next()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


# -- the log tools ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", TOOLS)
def test_a_missing_database_file_is_a_usage_error(tmp_path: Path, command: str) -> None:
    path = tmp_path / "typo.db"
    out = ringlog(*_args(command, str(path)))
    assert out.returncode == 2
    _assert_one_line(out.stderr)
    assert str(path).encode() in out.stderr and not path.exists()


@pytest.mark.parametrize(
    "content", [b"hello, not a database\n", os.urandom(4096), b"SQLite format 3\x00" + bytes(84)]
)
@pytest.mark.parametrize("command", TOOLS)
def test_a_file_that_is_not_sqlite_fails_in_one_line(tmp_path: Path, command: str, content: bytes) -> None:
    path = tmp_path / "other.db"
    path.write_bytes(content)
    out = ringlog(*_args(command, str(path)))
    assert out.returncode == 1, out.stderr
    _assert_one_line(out.stderr)


@pytest.mark.parametrize("command", TOOLS)
def test_a_directory_is_not_a_database(tmp_path: Path, command: str) -> None:
    out = ringlog(*_args(command, str(tmp_path)))
    assert out.returncode in (1, 2), out.stderr
    _assert_one_line(out.stderr)


@pytest.mark.parametrize("command", ["replay", "log"])
@pytest.mark.parametrize("draft", ["draft_nope", "", "draft_\x01", "ü" * 300, "' OR 1=1 --"])
def test_an_unknown_draft_is_a_failure_in_one_line(sound_db: Path, command: str, draft: str) -> None:
    out = ringlog(command, "--db", str(sound_db), "--draft", draft)
    assert out.returncode == 1, out.stderr
    assert out.stdout == b""
    _assert_one_line(out.stderr)
    assert b"not found" in out.stderr


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:{port}/ringlog",
        "postgres://nobody@127.0.0.1:{port}/x",
        "postgresql://postgres@127.0.0.1:notaport/x",
        "postgresql://[bad/x",
    ],
)
@pytest.mark.parametrize("command", [*TOOLS, "copy"])
def test_an_unreachable_or_malformed_postgresql_url_fails_in_one_line(
    refused_port: int, tmp_path: Path, command: str, url: str
) -> None:
    db = url.format(port=refused_port)
    args = ["copy", "--from", db, "--to", str(tmp_path / "t.db")] if command == "copy" else _args(command, db)
    out = ringlog(*args)
    assert out.returncode in (1, 2), out.stderr
    _assert_one_line(out.stderr)


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize(
    "url", ["postgresql://postgres@127.0.0.1:{port}/ringlog", "postgres://nobody@127.0.0.1:{port}/x"]
)
def test_serve_on_an_unreachable_store_fails_with_status_1_and_does_not_retry(
    refused_port: int, url: str, workers: str
) -> None:
    """docs/API.md "Exit status": 1 for a store that cannot be opened. With ``--workers`` the
    supervisor sees its workers refuse before they ever listened and exits the same way, rather
    than restarting them for ever against a store that is not there."""
    out = ringlog(
        "serve", "--port", "0", "--workers", workers, "--jwt-secret", "s" * 32,
        "--db", url.format(port=refused_port), timeout=60,
    )  # fmt: skip
    err = out.stderr.decode()
    assert out.returncode == 1, err
    assert b"listening" not in out.stdout and "Traceback" not in err, err
    assert "cannot start" in err and "PostgreSQL open failed" in err, err
    assert "restarting in" not in err, err


@pytest.mark.postgres
async def test_a_postgresql_database_that_does_not_exist_fails_in_one_line() -> None:
    async with temporary_database() as url:
        missing = url + "_missing"
        for command in TOOLS:
            out = await asyncio.to_thread(ringlog, *_args(command, missing))
            assert out.returncode == 1, out.stderr
            _assert_one_line(out.stderr)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["nonsense"],
        ["replay"],
        ["replay", "--db"],
        ["log", "--db", "x.db"],
        ["tail", "--url", "http://127.0.0.1:1"],
        ["drafts", "--json"],
        ["verify", "--db", "x.db", "--unknown-flag"],
    ],
)
def test_usage_errors_exit_2_without_a_traceback(args: list[str]) -> None:
    out = ringlog(*args)
    assert out.returncode == 2
    assert b"Traceback" not in out.stderr and b"error" in out.stderr


def test_tail_without_credentials_is_a_usage_error() -> None:
    out = ringlog("tail", "--url", "http://127.0.0.1:1", "--draft", "d")
    assert out.returncode == 2
    _assert_one_line(out.stderr)


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A malformed postgresql:// URL used to be the example here; it is now a usage error
    # (tests/hardening/test_store_urls.py), so a surprise is made where the tools run instead.
    import server.cli

    async def surprise(args: object) -> int:
        raise RuntimeError("a surprise\nover two lines")

    monkeypatch.setattr(server.cli, "_run_tool", surprise)
    monkeypatch.delenv("RINGLOG_DEBUG", raising=False)
    db = str(tmp_path / "x.db")

    class Out:
        def __init__(self, returncode: int, stderr: str) -> None:
            self.returncode, self.stderr = returncode, stderr.encode()

    def run(*args: str) -> Out:
        code = server.cli.main(list(args))
        return Out(code, capsys.readouterr().err)

    plain = run("verify", "--db", db)
    assert plain.returncode == 1
    _assert_one_line(plain.stderr)
    debug = run("--debug", "verify", "--db", db)
    monkeypatch.setenv("RINGLOG_DEBUG", "1")
    by_env = run("verify", "--db", db)
    for out in (debug, by_env):
        assert out.returncode == 1
        assert b"Traceback" in out.stderr
    monkeypatch.delenv("RINGLOG_DEBUG")
    bad_url = ringlog("verify", "--db", "postgresql://postgres@127.0.0.1:notaport/x")
    assert bad_url.returncode == 2
    _assert_one_line(bad_url.stderr)


def test_a_closed_stdout_is_not_a_traceback(sound_db: Path) -> None:
    import subprocess
    import sys

    # `ringlog log … | head -1`: the reader goes away after one line
    with subprocess.Popen(
        [sys.executable, "-m", "server.cli", "log", "--db", str(sound_db), "--draft", "draft_0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read()
        proc.wait(30)
    assert b"Traceback" not in err
