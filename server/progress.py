"""Progress lines for long CLI work (rebuild, copy, verify of big logs), on stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Prints ``label: done/total (pct%) rate/s`` at most every ``interval`` seconds."""

    def __init__(self, label: str, stream: TextIO | None = None, interval: float = 0.5) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.started = time.monotonic()
        self._last = 0.0
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < self.interval and done < total:
            return
        self._last = now
        self._shown = True
        elapsed = max(now - self.started, 1e-9)
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        end = "\r" if self.stream.isatty() else "\n"
        self.stream.write(f"{self.label}: {done}/{total} events{pct}, {done / elapsed:,.0f}/s{end}")
        self.stream.flush()

    def done(self, count: int) -> None:
        """Print the final line."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self.stream.write(f"{self.label}: {count} events in {elapsed:.2f}s\n")
        self.stream.flush()
