"""The README is tested: its commands, its configuration table and its token recipe."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import orjson

from ringlog import RinglogClient
from server.auth import Authenticator
from server.settings import Settings
from tests.hardening.cliproc import Lines
from tests.serverproc import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _sh_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README, flags=re.S)


def test_quick_start_is_two_commands_and_ci_runs_the_test_one() -> None:
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [b.strip() for b in re.findall(r"```sh\n(.*?)```", quick, flags=re.S)]
    assert len(commands) == 2
    serve, test = commands
    assert "ringlog serve" in serve and "\n" not in serve
    assert "pytest" in test and "\n" not in test
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1].strip() == test


def test_every_setting_is_in_the_configuration_table() -> None:
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for f in fields(Settings):
        if f.name == "extra":
            continue
        flag = "--" + f.name.replace("_", "-")
        env = "RINGLOG_" + f.name.upper()
        assert f"`{flag}`" in table, f"{flag} missing from README"
        assert f"`{env}`" in table, f"{env} missing from README"


async def test_the_token_recipe_is_accepted() -> None:
    snippet = re.search(r"```python\n(.*?)```", README, flags=re.S)
    assert snippet is not None
    scope: dict[str, object] = {}
    exec(snippet.group(1), scope)
    token = scope["token"]
    assert isinstance(token, str)
    auth = Authenticator(Settings(jwt_secret="replace-with-a-random-secret-of-32-bytes-or-more"))
    identity = await auth.verify_token(token)
    assert identity.user_id == "alice"


def _section(title: str) -> str:
    return README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def _with_ringlog_on_path() -> dict[str, str]:
    """The environment after the README's `. .venv/bin/activate`: this interpreter's bin first."""
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}


URL_LINE = "URL=http://127.0.0.1:8000\n"


async def test_the_shell_examples_run_as_written_twice(tmp_path: Path) -> None:
    """Using it: the curl block (run twice: fresh keys, so the second run appends too), then tail."""
    script, follow = _sh_blocks_of(_section("Using it"))[:2]
    assert script.startswith(URL_LINE), "the test points URL at its own server"
    assert "jq" not in script and "$ID" in script and "$KEY" in script
    with ServerProcess(str(tmp_path / "readme.db"), "--dev-auth", log_path=tmp_path / "s.log") as server:
        ids = []
        for _ in range(2):
            run = await asyncio.to_thread(
                subprocess.run,
                ["bash", "-euo", "pipefail", "-c", f"URL={server.url}\n" + script.removeprefix(URL_LINE)],
                capture_output=True,
                timeout=60,
                env=_with_ringlog_on_path(),
            )
            assert run.returncode == 0, run.stderr
            assert b'"error"' not in run.stdout, run.stdout
            ids.append(run.stdout.decode().split("draft: ", 1)[1].split()[0])
        assert ids[0] != ids[1]
        async with RinglogClient(server.url, user_id="bob") as bob:
            for draft_id in ids:
                events, head = await bob.events(draft_id)
                assert head == 4
                assert [e.type for e in events] == [
                    "collab.draft_created",
                    "collab.collaborator_added",
                    "collab.segment_added",
                    "collab.ring_passed",
                ]
                assert events[2].data["segment"]["content"] == "Once upon a time"
                assert (await bob.get_draft(draft_id)).ring_state.current_holder_id == "bob"
        # the follow-live block, as the same shell would run it (URL and ID still set)
        command = f"URL={server.url}\nID={ids[1]}\nexec {follow.strip()}"
        with subprocess.Popen(
            ["bash", "-c", command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_with_ringlog_on_path(),
        ) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            try:
                lines = Lines(proc.stdout)
                seqs = [orjson.loads(await asyncio.to_thread(lines.next))["seq"] for _ in range(4)]
                assert seqs == [1, 2, 3, 4]
                proc.send_signal(signal.SIGINT)
                assert await asyncio.to_thread(proc.wait, 20) == 0
                assert b"Traceback" not in proc.stderr.read()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)


def _sh_blocks_of(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def test_the_readme_names_the_public_client_package() -> None:
    clients = _section("Clients")
    assert "from ringlog import DraftStream, RinglogClient" in clients
    built = _section("How it is built")
    for folder in ("eventstore/", "projections/", "server/", "ringlog/", "client/", "scripts/", "tests/"):
        assert folder in built and (ROOT / folder).is_dir(), folder
