"""Kind: a store URL that names no store — one rule (eventstore.factory.check_store_url).

``--db 'postgresql://[bad'`` ended in "unexpected error: ValueError", a port of 99999 in an
OverflowError, ``--db mysql://x`` became an SQLite file named ``mysql://x``, and a path in a
missing directory was reported as a lock-file problem. Every command that takes a store
(``serve --db`` and ``RINGLOG_DB``, ``replay``/``log``/``drafts``/``verify``/``rebuild --db``,
``copy --from``/``--to``) now refuses such a URL as a usage error: exit 2, one line, no file made.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventstore.factory import StoreUrlError, check_store_url, open_store
from tests.hardening.cliproc import ringlog

BAD_URLS = [
    "postgresql://[bad",
    "postgresql://[bad/x",
    "postgresql://postgres@127.0.0.1:99999/x",
    "postgresql://postgres@127.0.0.1:0/x",
    "postgresql://h:abc/x",
    "postgres://h:-1/x",
    "mysql://x",
    "http://127.0.0.1/x.db",
    "sqlite:///nonexistent/dir/x.db",
    "/nonexistent/dir/x.db",
    "",
    ":memory:",
    "sqlite:///:memory:",
    "sqlite://:memory:",
]
COMMANDS = ["replay", "log", "verify", "rebuild", "drafts", "copy-from", "copy-to", "serve"]


def _args(command: str, url: str, tmp_path: Path) -> list[str]:
    if command == "copy-from":
        return ["copy", "--from", url, "--to", str(tmp_path / "t.db")]
    if command == "copy-to":
        source = tmp_path / "s.db"
        source.write_bytes(b"")
        return ["copy", "--from", str(source), "--to", url]
    if command == "serve":
        return ["serve", "--dev-auth", "--port", "0", "--db", url]
    return [command, "--db", url, *(["--draft", "d"] if command in ("replay", "log") else [])]


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_store_flag_refuses_a_bad_url_as_a_usage_error(tmp_path: Path, command: str, url: str) -> None:
    out = ringlog(*_args(command, url, tmp_path), timeout=30)
    err = out.stderr.decode()
    assert out.returncode == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "unexpected error" not in err and "lock" not in err, err
    assert "--db" in err or "--from" in err or "--to" in err, err


@pytest.mark.parametrize("url", ["mysql://x", "postgresql://[bad"])
def test_ringlog_db_variable_follows_the_same_rule(url: str) -> None:
    import os

    out = ringlog("serve", "--dev-auth", "--port", "0", env={**os.environ, "RINGLOG_DB": url}, timeout=30)
    err = out.stderr.decode()
    assert out.returncode == 2 and "RINGLOG_DB" in err and len(err.strip().splitlines()) == 1, err


def test_messages_say_what_is_wrong() -> None:
    with pytest.raises(StoreUrlError, match="SQLite file path or a postgresql:// URL"):
        check_store_url("mysql://x")
    with pytest.raises(StoreUrlError, match="directory"):
        check_store_url("/nonexistent/dir/x.db")
    with pytest.raises(StoreUrlError, match="postgresql:// URL"):
        check_store_url("postgresql://postgres@127.0.0.1:99999/x")
    with pytest.raises(StoreUrlError):  # code that builds a store directly gets the same rule
        open_store("mysql://x")


@given(
    scheme=st.from_regex(r"[a-z][a-z0-9+.-]{0,8}", fullmatch=True).filter(
        lambda s: s not in ("postgresql", "postgres", "sqlite")
    ),
    rest=st.text(max_size=20),
)
def test_an_unknown_scheme_is_never_a_file_name(scheme: str, rest: str) -> None:
    with pytest.raises(StoreUrlError):
        check_store_url(f"{scheme}://{rest}")


@given(port=st.integers(min_value=-(10**6), max_value=10**6))
def test_postgresql_ports_are_1_to_65535(port: int) -> None:
    url = f"postgresql://postgres@127.0.0.1:{port}/x"
    if 1 <= port <= 65535:
        assert check_store_url(url) == url
    else:
        with pytest.raises(StoreUrlError):
            check_store_url(url)


def test_good_urls_pass(tmp_path: Path) -> None:
    for url in ["memory:", str(tmp_path / "x.db"), f"sqlite:///{tmp_path}/x.db", "x.db",
                "postgresql://postgres@127.0.0.1:5432/x", "postgres://u@h/x", "postgresql:///x?host=/tmp"]:  # fmt: skip
        assert check_store_url(url) == url
