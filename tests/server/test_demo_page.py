"""The demo page and everything it asks for load with no 404 (in process, aiohttp's test client)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from eventstore.memory import MemoryStore
from server.app import create_app
from server.settings import Settings


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = create_app(Settings(db="memory:", dev_auth=True), MemoryStore())
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_favicon_ico_is_served(client: TestClient[web.Request, web.Application]) -> None:
    r = await client.get("/favicon.ico")
    assert r.status == 200
    assert r.content_type == "image/svg+xml"
    assert (await r.read()).startswith(b"<svg")


async def test_every_resource_the_page_names_exists(client: TestClient[web.Request, web.Application]) -> None:
    html = await (await client.get("/")).text()
    icon = re.search(r'<link rel="icon"[^>]*href="([^"]+)"', html)
    assert icon is not None, "the page names its icon, so browsers do not guess /favicon.ico"
    names = re.findall(r'(?:href|src)="(/[^"]*)"', html)
    assert icon.group(1) in names and len(names) >= 3
    for name in names:
        r = await client.get(name)
        assert r.status == 200, name
