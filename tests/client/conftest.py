"""Fixtures for the Python client tests: a real ``ringlog serve`` on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serverproc import ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """Dev auth on, rate limit off, on a fresh SQLite file."""
    with ServerProcess(str(tmp_path / "client.db"), "--dev-auth", "--rate-limit", "0",
                       log_path=tmp_path / "server.log") as proc:  # fmt: skip
        yield proc
