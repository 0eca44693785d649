"""End-to-end fixtures: a real ``ringlog serve`` on loopback with dev auth and an HS256 secret."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.apikit import TIMEOUT, Api
from tests.serverproc import ServerProcess

DEFAULT_MODULE_ARGS = ("--dev-auth", "--rate-limit", "0")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server on a fresh SQLite file, dev auth on, rate limit off."""
    with ServerProcess(str(tmp_path / "e2e.db"), "--dev-auth", "--rate-limit", "0",
                       log_path=tmp_path / "server.log") as proc:  # fmt: skip
        yield proc


@pytest.fixture(scope="module")
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server shared by a module's tests; a module may set ``SERVER_ARGS`` to configure it."""
    args = getattr(request.module, "SERVER_ARGS", DEFAULT_MODULE_ARGS)
    tmp: Path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    with ServerProcess(str(tmp / "e2e.db"), *args, log_path=tmp / "server.log") as proc:
        yield proc


@pytest.fixture
async def api(srv: ServerProcess) -> AsyncIterator[Api]:
    """A JSON client of the module's server."""
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        yield Api(srv, http)
