"""End-to-end fixtures: a real ``ringlog serve`` on loopback with dev auth and an HS256 secret."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serverproc import ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server on a fresh SQLite file, dev auth on, rate limit off."""
    with ServerProcess(str(tmp_path / "e2e.db"), "--dev-auth", "--rate-limit", "0",
                       log_path=tmp_path / "server.log") as proc:  # fmt: skip
        yield proc
