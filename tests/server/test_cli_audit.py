"""The operator tools (``ringlog replay/log/verify/rebuild``) on a database the tests produced."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from eventstore.events import canonical_json
from eventstore.sqlite import SQLiteStore
from projections.fold import fold_all
from projections.state import DraftState
from tests.projections.drafting import populate

DRAFTS = 4


def ringlog(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run the real command line in a child process, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args], capture_output=True, timeout=120, check=False
    )


async def _read_log(path: Path) -> dict[str, list[bytes]]:
    store = SQLiteStore(path)
    await store.open()
    try:
        bodies: dict[str, list[bytes]] = {}
        for r in await store.read_all(0, 1_000_000):
            bodies.setdefault(r.stream_id, []).append(r.body)
        return bodies
    finally:
        await store.close()


async def _build(path: Path) -> None:
    store = SQLiteStore(path)
    await store.open()
    try:
        await populate(store, drafts=DRAFTS, steps=150, seed=11)
    finally:
        await store.close()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "ringlog.db"
    asyncio.run(_build(path))
    return path


@pytest.fixture(scope="module")
def bodies(db: Path) -> dict[str, list[bytes]]:
    return asyncio.run(_read_log(db))


def _fold(bodies: list[bytes]) -> DraftState:
    from eventstore.events import Event

    state = fold_all(None, [Event.from_body(b) for b in bodies])
    assert state is not None
    return state


def test_replay_until_seq_is_the_fold_of_the_prefix(db: Path, bodies: dict[str, list[bytes]]) -> None:
    log = bodies["draft_1"]
    for n in (1, 2, len(log) // 2, len(log)):
        out = ringlog("replay", "--db", str(db), "--draft", "draft_1", "--until-seq", str(n), "--json")
        assert out.returncode == 0, out.stderr
        expected = _fold(log[:n])
        assert out.stdout == expected.to_json() + b"\n"
        assert orjson.loads(out.stdout)["seq"] == n
        assert canonical_json(orjson.loads(out.stdout)) + b"\n" == out.stdout  # canonical


def test_replay_without_a_seq_is_the_current_state(db: Path, bodies: dict[str, list[bytes]]) -> None:
    out = ringlog("replay", "--db", str(db), "--draft", "draft_2")
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout) == _fold(bodies["draft_2"]).to_dict()


def test_replay_refuses_what_does_not_exist(db: Path, bodies: dict[str, list[bytes]]) -> None:
    missing = ringlog("replay", "--db", str(db), "--draft", "draft_nope")
    assert missing.returncode != 0 and missing.stdout == b""
    assert b"draft_nope" in missing.stderr and b"not found" in missing.stderr
    beyond = ringlog(
        "replay", "--db", str(db), "--draft", "draft_0", "--until-seq", str(len(bodies["draft_0"]) + 1)
    )
    assert beyond.returncode != 0 and beyond.stdout == b""
    assert b"only" in beyond.stderr
    zero = ringlog("replay", "--db", str(db), "--draft", "draft_0", "--until-seq", "0")
    assert zero.returncode != 0 and b"until-seq" in zero.stderr


def test_log_prints_the_stored_bodies_as_json_lines(db: Path, bodies: dict[str, list[bytes]]) -> None:
    out = ringlog("log", "--db", str(db), "--draft", "draft_3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == bodies["draft_3"]
    assert [orjson.loads(line)["seq"] for line in out.stdout.splitlines()] == list(
        range(1, len(bodies["draft_3"]) + 1)
    )
    since = ringlog("log", "--db", str(db), "--draft", "draft_3", "--since", "5")
    assert since.returncode == 0 and since.stdout.splitlines() == bodies["draft_3"][5:]
    after_head = ringlog("log", "--db", str(db), "--draft", "draft_3", "--since", str(len(bodies["draft_3"])))
    assert after_head.returncode == 0 and after_head.stdout == b""
    missing = ringlog("log", "--db", str(db), "--draft", "draft_nope")
    assert missing.returncode != 0 and b"not found" in missing.stderr


def test_verify_a_sound_log(db: Path, bodies: dict[str, list[bytes]]) -> None:
    total = sum(len(b) for b in bodies.values())
    out = ringlog("verify", "--db", str(db))
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().strip() == f"ok: {total} events in {DRAFTS} drafts"


def console_script() -> Path:
    """The installed ``ringlog`` script: beside this interpreter (a virtual environment's bin,
    which need not be on PATH), else on PATH. The package is installed for the tests to run at
    all (``pip install -e '.[test]'``), so a missing script is a failure, never a skip."""
    beside = Path(sys.executable).parent / ("ringlog.exe" if sys.platform == "win32" else "ringlog")
    if beside.exists():
        return beside
    on_path = shutil.which("ringlog")
    assert on_path is not None, f"no ringlog console script beside {sys.executable} or on PATH"
    return Path(on_path)


def test_console_script_is_installed(db: Path) -> None:
    exe = console_script()
    out = subprocess.run([exe, "verify", "--db", str(db)], capture_output=True, timeout=120, check=False)
    assert out.returncode == 0 and out.stdout.startswith(b"ok: ")


def test_rebuild_shows_progress_and_writes_snapshots_equal_to_the_fold(
    db: Path, bodies: dict[str, list[bytes]], tmp_path: Path
) -> None:
    copy = tmp_path / "rebuild.db"
    shutil.copy(db, copy)
    total = sum(len(b) for b in bodies.values())
    out = ringlog("rebuild", "--db", str(copy))
    assert out.returncode == 0, out.stderr
    progress = out.stderr.decode()
    assert f"rebuild: {total}/{total} events (100%)" in progress
    assert f"rebuild: {total} events in" in progress

    async def snapshots() -> dict[str, tuple[int, bytes]]:
        store = SQLiteStore(copy)
        await store.open()
        try:
            assert await store.snapshot_checkpoint() == total
            return {s.stream_id: (s.seq, s.state) for s in await store.list_snapshots()}
        finally:
            await store.close()

    snaps = asyncio.run(snapshots())
    assert set(snaps) == set(bodies)
    for draft_id, log in bodies.items():
        state = _fold(log)
        assert snaps[draft_id] == (state.seq, state.to_json())
    # the log itself is untouched
    assert asyncio.run(_read_log(copy)) == bodies
    assert ringlog("verify", "--db", str(copy)).returncode == 0


@pytest.mark.parametrize("command", ["verify", "rebuild", "log", "replay"])
def test_a_missing_database_file_is_an_error_not_a_new_log(tmp_path: Path, command: str) -> None:
    path = tmp_path / "typo.db"
    extra = ["--draft", "d"] if command in ("log", "replay") else []
    out = ringlog(command, "--db", str(path), *extra)
    assert out.returncode != 0
    assert str(path).encode() in out.stderr and b"Traceback" not in out.stderr
    assert not path.exists()


def test_a_log_that_cannot_be_folded_is_reported_without_a_traceback(tmp_path: Path) -> None:
    """The store accepts any event; a log written by a buggy writer must still be diagnosable."""
    from eventstore import NewEvent

    path = tmp_path / "odd.db"

    async def write() -> None:
        store = SQLiteStore(path)
        await store.open()
        try:
            await store.append(
                "d", [NewEvent("collab.draft_updated", "u", "2025-01-01T00:00:00.000Z", {})], 0
            )
        finally:
            await store.close()

    asyncio.run(write())
    assert ringlog("verify", "--db", str(path)).returncode == 0  # the chain itself is sound
    for args in (["replay", "--draft", "d"], ["rebuild"]):
        out = ringlog(*args, "--db", str(path))
        assert out.returncode != 0
        assert b"collab.draft_created" in out.stderr and b"Traceback" not in out.stderr
