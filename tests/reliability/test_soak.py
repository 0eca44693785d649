"""A short ``scripts/soak.py``: sockets with reconnect churn under steady appends; no gap, no duplicate, fds flat."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]


def test_short_soak_loses_and_repeats_nothing() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "soak.py"), "--seconds", "10", "--sockets", "100",
         "--drafts", "5", "--rate", "100", "--churn", "10"],
        capture_output=True, text=True, timeout=110, cwd=ROOT,
    )  # fmt: skip
    summary = orjson.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0 and not summary["violations"], (summary, run.stderr[-3000:])
    assert summary["appended"] > 300 and summary["delivered"] >= summary["appended"] * 10
    assert summary["reconnects"] > 50
    first, last = summary["fds_first_last"]
    assert last <= first + 10, summary  # churn does not leak descriptors
