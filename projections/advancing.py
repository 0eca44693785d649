"""The advance task shared by the projectors (:class:`projections.runner.DraftProjector`,
:class:`projections.feed_index.FeedProjector`): advance whenever asked, and after a failure
(the store unreachable, a read refused) log it and try again after a growing, jittered pause."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

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
