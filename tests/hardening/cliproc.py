"""Run ``ringlog`` as an operator would, in a child process, and read its output with deadlines."""

from __future__ import annotations

import contextlib
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import IO


def ringlog(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """The real command line, to completion."""
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        capture_output=True,
        timeout=timeout,
        check=False,
        env=env,
    )


class Lines:
    """Read a child's pipe line by line with a deadline (select, no sleeps)."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.pipe = pipe
        self.sel = selectors.DefaultSelector()
        self.sel.register(pipe, selectors.EVENT_READ)
        self.seen: list[str] = []

    def next(self, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sel.select(timeout=max(0.0, deadline - time.monotonic())):
                line = self.pipe.readline()
                if not line:
                    raise EOFError(f"the pipe closed; lines so far: {self.seen}")
                text = line.decode().rstrip("\n")
                self.seen.append(text)
                return text
        raise TimeoutError(f"no line within {timeout} s; lines so far: {self.seen}")

    def until(self, needle: str, timeout: float = 20.0) -> str:
        """The first line containing ``needle``."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(max(0.0, deadline - time.monotonic()))
            if needle in line:
                return line


@contextlib.contextmanager
def running(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``ringlog *args`` in the background; killed if still running at the end."""
    cmd = [sys.executable, "-m", "server.cli", *args]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
