"""The advance task shared by the projectors (:class:`projections.runner.DraftProjector`,
:class:`projections.feed_index.FeedProjector`): advance whenever asked, and after a failure
(the store unreachable, a read refused) log it and try again after a growing, jittered pause."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

ADVANCE_RETRY_FIRST = 0.05
ADVANCE_RETRY_MAX = 5.0
"""Seconds: pauses of an advance task after a failure grow from FIRST to MAX (jittered)."""


async def advance_when_asked(
    wanted: asyncio.Event,
    advance: Callable[[], Awaitable[object]],
    *,
    what: str,
    position: Callable[[], int],
    failed: Callable[[], None],
) -> None:
    """Run ``advance()`` each time ``wanted`` is set, until cancelled (the owner's task).

    ``advance`` clears ``wanted`` itself when it has taken the work it was asked for. A failure
    (any ``Exception``) calls ``failed()`` (the owner's counter), logs one warning naming ``what``
    and ``position()``, sets ``wanted`` again and sleeps a pause that doubles from
    :data:`ADVANCE_RETRY_FIRST` to :data:`ADVANCE_RETRY_MAX` seconds (times 0.5–1.0, so that
    processes do not retry in step); a success resets the pause.
    """
    pause = ADVANCE_RETRY_FIRST
    while True:
        await wanted.wait()
        try:
            await advance()
        except Exception:
            failed()
            delay = pause * random.uniform(0.5, 1.0)
            log.warning(
                "%s could not advance from position %d; retrying in %.2f s",
                what,
                position(),
                delay,
                exc_info=True,
            )
            wanted.set()
            await asyncio.sleep(delay)
            pause = min(pause * 2, ADVANCE_RETRY_MAX)
        else:
            pause = ADVANCE_RETRY_FIRST


class OwnedTasks:
    """The background tasks of one owner (a projector): started by :meth:`spawn`, listed by
    :attr:`running`, all cancelled and awaited by :meth:`cancel_all`.

    A task that ends with an exception is logged as an error naming ``owner`` (the owners' loops
    catch every ``Exception``, so this is a bug and must not pass unseen).
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` as a task named ``name`` on the running loop."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    @property
    def running(self) -> frozenset[asyncio.Task[None]]:
        """The tasks not finished yet."""
        return frozenset(self._tasks)

    async def cancel_all(self) -> None:
        """Cancel every task and wait until each has ended."""
        tasks = tuple(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s task %s stopped", self.owner, task.get_name(), exc_info=task.exception())
