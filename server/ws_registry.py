"""Every open WebSocket of this node, by user: for the per-user cap and for shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

CLOSE_GOING_AWAY = 1001

CloseSocket = Callable[[int, bytes], Awaitable[None]]


class SocketRegistry:
    """Every open socket of this node, by user (for the per-user cap and for shutdown)."""

    def __init__(self) -> None:
        self.by_user: dict[str, set[web.WebSocketResponse]] = defaultdict(set)
        self.all: dict[web.WebSocketResponse, CloseSocket] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing = False

    def add(self, user_id: str, ws: web.WebSocketResponse, close: CloseSocket) -> None:
        """Register ``ws``; ``close(code, message)`` closes it and returns once it is closed."""
        self.by_user[user_id].add(ws)
        self.all[ws] = close

    def remove(self, user_id: str, ws: web.WebSocketResponse) -> None:
        self.all.pop(ws, None)
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
        closers = list(self.all.values())
        if closers:
            closes = [close(CLOSE_GOING_AWAY, b"server shutting down") for close in closers]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*closes, return_exceptions=True), timeout)
        for task in list(self.tasks):
            task.cancel()
