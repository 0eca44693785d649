"""Helpers for the RinglogSocket tests (tests/client/test_socket*.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from ringlog import RinglogClient, RinglogSocket
from ringlog.backoff import Backoff

TIMEOUT = 20
"""Seconds any one wait of these tests may take (generous: the machine is shared)."""

T = TypeVar("T")


def fast_backoff() -> Backoff:
    """A backoff that reconnects within half a second."""
    return Backoff(base=0.05, cap=0.5)


async def take(stream: AsyncIterator[T], n: int) -> list[T]:
    """The next ``n`` items of a subscription or feed, each within :data:`TIMEOUT`."""
    return [await asyncio.wait_for(anext(stream), TIMEOUT) for _ in range(n)]


@asynccontextmanager
async def api_and_socket(
    url: str, api_user: str = "alice", socket_user: str = "alice", **options: Any
) -> AsyncIterator[tuple[RinglogClient, RinglogSocket]]:
    """A REST client as ``api_user`` and a socket as ``socket_user`` (``options``: RinglogSocket's
    keywords), both closed on leaving."""
    async with (
        RinglogClient(url, user_id=api_user) as api,
        RinglogSocket(url, user_id=socket_user, **options) as sock,
    ):
        yield api, sock
