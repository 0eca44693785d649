"""Every open WebSocket of this node, by user (per-user cap, shutdown), and each socket's tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
"""RFC 6455 §7.4.1 "Going Away": the server is shutting down (API.md "WebSocket" item 6)."""

CloseSocket = Callable[[int, bytes], Awaitable[None]]


class SocketRegistry:
    """Every open socket of this node, by user (for the per-user cap and for shutdown)."""

    def __init__(self) -> None:
        self.by_user: dict[str, set[web.WebSocketResponse]] = defaultdict(set)
        self.all: dict[web.WebSocketResponse, CloseSocket] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing = False
        self.on_change: Callable[[str], None] | None = None
        """Called with a user id whenever that user's count changes (the shared socket cap)."""

    def add(self, user_id: str, ws: web.WebSocketResponse, close: CloseSocket) -> None:
        """Register ``ws``; ``close(code, message)`` closes it and returns once it is closed."""
        self.by_user[user_id].add(ws)
        self.all[ws] = close
        if self.on_change is not None:
            self.on_change(user_id)

    def remove(self, user_id: str, ws: web.WebSocketResponse) -> None:
        """Forget ``ws`` (its handler has finished with it)."""
        self.all.pop(ws, None)
        sockets = self.by_user.get(user_id)
        if sockets is not None:
            sockets.discard(ws)
            if not sockets:
                del self.by_user[user_id]
            if self.on_change is not None:
                self.on_change(user_id)

    def count(self, user_id: str) -> int:
        """Open sockets of ``user_id`` on this node."""
        return len(self.by_user.get(user_id, ()))

    def counts(self) -> dict[str, int]:
        """Open sockets on this node of every user who has any."""
        return {user: len(sockets) for user, sockets in self.by_user.items() if sockets}

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a socket-related coroutine as an owned task (cancelled at shutdown, errors logged)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("socket task %s failed", task.get_name(), exc_info=task.exception())

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


class SocketTasks:
    """The background tasks of one socket (catch-up, backlog writer, token expiry).

    Owned in a set that drops each task when it finishes (a long-lived socket that catches up
    many times keeps no dead tasks); also registered with the node's :class:`SocketRegistry`, which
    logs failures and cancels whatever is left at shutdown.
    """

    __slots__ = ("_registry", "_tasks")

    def __init__(self, registry: SocketRegistry) -> None:
        self._registry = registry
        # made by the first spawn: an idle socket whose catch-up has ended holds no set (issue 16)
        self._tasks: set[asyncio.Task[None]] | None = None

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Start ``coro`` as one of this socket's tasks."""
        task = self._registry.spawn(coro)
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        tasks = self._tasks
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                self._tasks = None

    def cancel_all(self) -> None:
        """Cancel every task still running (the socket is closing)."""
        if self._tasks is not None:
            for task in tuple(self._tasks):
                task.cancel()
