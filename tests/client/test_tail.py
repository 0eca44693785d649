"""``ringlog tail`` as a subprocess: history, live events, a restart, and Ctrl-C exits 0."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ringlog import RinglogClient
from tests.hardening.cliproc import Lines
from tests.serverproc import ServerProcess


@contextlib.contextmanager
def _tail(server: ServerProcess, draft_id: str, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    cmd = [sys.executable, "-m", "server.cli", "tail", "--url", server.url, "--draft", draft_id, *extra]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


async def test_tail_follows_resumes_and_exits_zero_on_ctrl_c(server: ServerProcess) -> None:
    async with RinglogClient(server.url, user_id="alice") as alice:
        draft = await alice.create_draft("Tailed")
        await alice.append_segment(draft.id, "old")
        with _tail(server, draft.id, "--user-id", "alice", "--since", "1") as proc:
            assert proc.stdout is not None
            lines = Lines(proc.stdout)
            first = json.loads(lines.next())
            assert first["seq"] == 2 and first["data"]["segment"]["content"] == "old"
            await alice.append_segment(draft.id, "new")
            assert json.loads(lines.next())["seq"] == 3
            assert server.stop() == 0
            server.start()
            await alice.append_segment(draft.id, "after restart")
            resumed = json.loads(lines.next())
            assert resumed["seq"] == 4 and resumed["data"]["segment"]["content"] == "after restart"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(20) == 0


async def test_tail_pretty_and_refusal(server: ServerProcess) -> None:
    async with RinglogClient(server.url, user_id="alice") as alice:
        draft = await alice.create_draft("Pretty")
    with _tail(server, draft.id, "--user-id", "alice", "--pretty") as proc:
        assert proc.stdout is not None
        line = Lines(proc.stdout).next()
        assert line.startswith("#1 ") and "alice created 'Pretty'" in line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    with _tail(server, draft.id, "--user-id", "mallory") as stranger:
        _out, err = stranger.communicate(timeout=30)
    assert stranger.returncode == 1
    assert b"forbidden" in err


@pytest.mark.parametrize("args", [(), ("--user-id", "a", "--since", "-1")])
def test_tail_usage_errors(server: ServerProcess, args: tuple[str, ...]) -> None:
    with _tail(server, "draft_x", *args) as proc:
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and b"ringlog tail:" in err
