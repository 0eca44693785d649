"""schemathesis against a live server's /openapi.json: no 5xx, responses match the schema, every operation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.serverproc import ServerProcess, make_token

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    # Bearer auth (not dev auth), so schemathesis's ignored_auth check is meaningful; a short
    # long-poll ceiling keeps generated waits (and so the run) short.
    srv = ServerProcess(str(tmp_path / "fuzz.db"), "--rate-limit", "0", "--longpoll-max", "1",
                        log_path=tmp_path / "server.log")  # fmt: skip
    with srv:
        run = subprocess.run(
            [
                sys.executable, "-m", "schemathesis.cli", "--config-file", str(HERE / "schemathesis.toml"),
                "run", f"{srv.url}/openapi.json", "--checks", "all", "--max-examples", "15", "--workers", "1",
                "--phases", "examples,coverage,fuzzing,stateful", "--seed", "1",
                "-H", f"Authorization: Bearer {make_token('fuzzer')}",
            ],
            capture_output=True, text=True, timeout=110, cwd=ROOT,
            env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.reliability.st_hooks", "NO_COLOR": "1"},
        )  # fmt: skip
        with urllib.request.urlopen(f"{srv.url}/openapi.json", timeout=10) as reply:
            document = json.load(reply)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    # every operation the server documents is exercised (the count follows the document itself)
    operations = sum(len(item) for item in document["paths"].values())
    assert f"{operations} selected / {operations} total" in out, out[-3000:]
    assert "internal_error" not in (tmp_path / "server.log").read_text()
