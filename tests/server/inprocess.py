"""The real app (``create_app``) in this process, on a MemoryStore (or a fake of the store).

aiohttp's ``TestServer``/``TestClient``: no subprocess, no database; requests go through every
middleware and handler exactly as in production.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from eventstore.memory import MemoryStore
from server.app import create_app
from server.settings import Settings
from server.state import AppState


@dataclass
class InProcess:
    """A running in-process app and a JSON client of it (dev auth: ``X-User-Id``)."""

    app: web.Application
    client: TestClient[web.Request, web.Application]
    store: MemoryStore

    @property
    def state(self) -> AppState:
        return self.app[AppState.KEY]

    async def call(
        self,
        method: str,
        path: str,
        user: str | None = "alice",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, Any, Mapping[str, str]]:
        """(status, decoded JSON body or None, headers); ``params`` are added to the query."""
        sent = dict(headers or {})
        if user is not None:
            sent["X-User-Id"] = user
        async with self.client.request(method, path, json=body, headers=sent, params=params) as r:
            raw = await r.read()
            decoded = await r.json(content_type=None) if raw else None
            return r.status, decoded, r.headers

    async def create(self, user: str = "alice", title: str = "T") -> str:
        status, body, _ = await self.call("POST", "/v1/collab/drafts", user, {"title": title})
        assert status == 201, body
        draft_id: str = body["data"]["id"]
        return draft_id

    async def append(
        self, draft_id: str, content: str = "x", user: str = "alice", headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any, Mapping[str, str]]:
        return await self.call(
            "POST", f"/v1/collab/drafts/{draft_id}/segments", user, {"content": content}, headers
        )


@contextlib.asynccontextmanager
async def running_app(
    store: MemoryStore | None = None,
    configure: Callable[[web.Application], None] | None = None,
    **settings: Any,
) -> AsyncIterator[InProcess]:
    """Start the app on ``store`` (a fresh MemoryStore by default); stop it on exit.

    ``configure`` may add routes to the app before it starts.
    """
    store = store if store is not None else MemoryStore()
    options: dict[str, Any] = {"dev_auth": True, "rate_limit": 0.0, "db": "memory:"}
    options.update(settings)
    app = create_app(Settings(**options), store)
    if configure is not None:
        configure(app)
    async with TestClient(TestServer(app)) as client:
        yield InProcess(app, client, store)
