"""Per-user token buckets (mutations per second, bursts up to twice the rate).

One process's buckets; :class:`server.peerlimits.SharedRateLimit` charges the other processes'
grants to them, so the limit holds for a user across every process (docs/API.md additions).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """``allow(user)`` returns 0 when a request may go ahead, else seconds to wait."""

    def __init__(
        self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else 2 * rate
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self.track_taken = False
        """Count the tokens each user takes, for :meth:`take_taken` (set while shared with peers)."""
        self._taken: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        """A rate of 0 turns limiting off."""
        return self.rate > 0

    def allow(self, user_id: str) -> float:
        """Take a token for ``user_id``; 0.0 if granted, else the wait in seconds."""
        if not self.enabled:
            return 0.0
        bucket = self._refilled(user_id)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            if self.track_taken:
                self._taken[user_id] = self._taken.get(user_id, 0) + 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def charge(self, user_id: str, tokens: int) -> None:
        """Take ``tokens`` granted to ``user_id`` by another process from this process's bucket.

        The bucket may go below zero (a debt repaid at the rate), so grants elsewhere count here
        in full; it refills as usual (bounded by the burst).
        """
        if not self.enabled or tokens <= 0:
            return
        bucket = self._refilled(user_id)
        bucket.tokens -= tokens

    def take_taken(self) -> dict[str, int]:
        """Tokens each user took since the last call (users who took none are absent); resets."""
        taken, self._taken = self._taken, {}
        return taken

    def retry_after(self, wait: float) -> str:
        """A ``Retry-After`` value (whole seconds, at least 1)."""
        return str(max(1, math.ceil(wait)))

    def _refilled(self, user_id: str) -> _Bucket:
        """``user_id``'s bucket refilled at the rate up to now (bounded by the burst); a new one is full."""
        now = self.clock()
        bucket = self._buckets.get(user_id)
        if bucket is None:
            if len(self._buckets) > 100_000:
                self._prune(now)
            bucket = self._buckets[user_id] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        return bucket

    def _prune(self, now: float) -> None:
        full = [u for u, b in self._buckets.items() if b.tokens + (now - b.stamp) * self.rate >= self.burst]
        for user in full:
            del self._buckets[user]
