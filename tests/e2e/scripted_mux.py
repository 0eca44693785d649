"""A scripted ``/v1/ws`` for the browser tests (Playwright's WebSocket routing): the test plays
the server's side of API.md v2 "One socket, many drafts" — ``connected``, ``subscribed`` after
the page's ``subscribe``, events, per-draft ``error`` — and reads what the page sent."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from playwright.async_api import Page, WebSocketRoute

MUX_URL = re.compile(r".*/v1/ws\?.*")
TS = "2025-01-01T00:00:00.000Z"


class ScriptedMux:
    """One routed ``/v1/ws`` socket: every client message is kept, ``subscribe`` also queued."""

    def __init__(self, route: WebSocketRoute) -> None:
        self.route = route
        self.received: list[dict[str, Any]] = []
        self._subscribes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        route.on_message(self._on_message)

    def _on_message(self, message: str | bytes) -> None:
        msg = json.loads(message)
        self.received.append(msg)
        if msg.get("type") == "subscribe":
            self._subscribes.put_nowait(msg)

    def send(self, msg: dict[str, Any]) -> None:
        self.route.send(json.dumps(msg))

    def connected(self, user_id: str) -> None:
        self.send({"type": "connected", "user_id": user_id, "ts": TS})

    async def subscribe_of(self, draft_id: str, timeout_s: float = 15.0) -> dict[str, Any]:
        """The page's next ``subscribe`` of ``draft_id`` (others are skipped)."""
        async with asyncio.timeout(timeout_s):
            while True:
                msg = await self._subscribes.get()
                if msg.get("draft_id") == draft_id:
                    return msg

    async def accept(self, draft_id: str, head_seq: int) -> int | None:
        """Wait for the page's ``subscribe`` of the draft, answer ``subscribed``; its ``since``."""
        msg = await self.subscribe_of(draft_id)
        self.send({"type": "subscribed", "draft_id": draft_id, "head_seq": head_seq})
        since = msg.get("since")
        return since if isinstance(since, int) else None

    def error(self, code: str, draft_id: str | None = None, message: str | None = None) -> None:
        out: dict[str, Any] = {"type": "error", "code": code, "message": message or code}
        if draft_id is not None:
            out["draft_id"] = draft_id
        self.send(out)

    def sent_of(self, type_: str, draft_id: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("type") == type_ and m.get("draft_id") == draft_id]


async def route_mux(page: Page) -> asyncio.Queue[ScriptedMux]:
    """Route every ``/v1/ws`` socket the page opens from now on to a ScriptedMux (queued)."""
    sockets: asyncio.Queue[ScriptedMux] = asyncio.Queue()
    await page.route_web_socket(MUX_URL, lambda route: sockets.put_nowait(ScriptedMux(route)))
    return sockets
