"""Exponential backoff with full jitter (a random delay in ``[0, min(cap, base·2ⁿ)]``)."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays for successive retries; :meth:`reset` after a success."""

    def __init__(
        self, base: float = 0.5, cap: float = 30.0, rand: Callable[[], float] = random.random
    ) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rand = rand

    def next_delay(self, retry_after: float | None = None) -> float:
        """The next delay in seconds; never shorter than the server's ``Retry-After``."""
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        delay: float = self._rand() * ceiling
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cap))
        return delay

    def reset(self) -> None:
        """Start again from the smallest delay."""
        self.attempt = 0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form only), else None."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
