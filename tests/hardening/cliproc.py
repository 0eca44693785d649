"""Run ``ringlog`` as an operator would, in a child process, and read its output with deadlines."""

from __future__ import annotations

import contextlib
import os
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
    """Read a child's pipe line by line with a deadline (select, no sleeps).

    Reads the pipe's file descriptor directly and keeps its own buffer: with a buffered reader,
    several lines arriving at once would sit in its buffer while select() waits for more.
    """

    def __init__(self, pipe: IO[bytes]) -> None:
        self.fd = pipe.fileno()
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.fd, selectors.EVENT_READ)
        self.buffer = b""
        self.closed = False
        self.seen: list[str] = []

    def next(self, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            if self.closed:
                raise EOFError(f"the pipe closed; lines so far: {self.seen}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line within {timeout} s; lines so far: {self.seen}")
            if self.sel.select(timeout=remaining):
                chunk = os.read(self.fd, 65536)
                self.buffer += chunk
                self.closed = not chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        text = line.decode()
        self.seen.append(text)
        return text

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
