"""Every open WebSocket of this node, by user: for the per-user cap and for shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from typing import Any

from aiohttp import web

CLOSE_GOING_AWAY = 1001


class SocketRegistry:
    """Every open socket of this node, by user (for the per-user cap and for shutdown)."""

    def __init__(self) -> None:
        self.by_user: dict[str, set[web.WebSocketResponse]] = defaultdict(set)
        self.all: set[web.WebSocketResponse] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing = False

    def add(self, user_id: str, ws: web.WebSocketResponse) -> None:
        self.by_user[user_id].add(ws)
        self.all.add(ws)

    def remove(self, user_id: str, ws: web.WebSocketResponse) -> None:
        self.all.discard(ws)
        sockets = self.by_user.get(user_id)
        if sockets is not None:
            sockets.discard(ws)
            if not sockets:
                del self.by_user[user_id]

    def count(self, user_id: str) -> int:
        return len(self.by_user.get(user_id, ()))

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run a socket-related coroutine as an owned task (cancelled at shutdown)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def close_all(self, timeout: float) -> None:
        """Close every socket with 1001 (server going away)."""
        self.closing = True
        sockets = list(self.all)
        if sockets:
            closes = [ws.close(code=CLOSE_GOING_AWAY, message=b"server shutting down") for ws in sockets]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*closes, return_exceptions=True), timeout)
        for task in list(self.tasks):
            task.cancel()
