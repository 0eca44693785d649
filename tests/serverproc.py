"""Start a real ``ringlog serve`` process for end-to-end tests, and stop or crash it."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import jwt

TEST_SECRET = "test-secret-for-ringlog-e2e-at-least-32-bytes"


def make_token(
    sub: str | None, *, secret: str = TEST_SECRET, expires_in: float = 3600, **claims: object
) -> str:
    """An HS256 JWT for ``sub`` (None leaves ``sub`` out)."""
    payload: dict[str, object] = {"exp": int(time.time() + expires_in), **claims}
    if sub is not None:
        payload["sub"] = sub
    return jwt.encode(payload, secret, algorithm="HS256")


class ServerProcess:
    """One ``ringlog serve`` subprocess on loopback."""

    def __init__(
        self, db: str, *args: str, log_path: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.db = db
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")

    def start(self, timeout: float = 20.0) -> ServerProcess:
        """Start and wait for the 'listening' line (reuses the previous port on restart)."""
        cmd = [
            sys.executable, "-m", "server.cli", "serve",
            "--host", "127.0.0.1", "--port", str(self.port), "--db", self.db,
            "--jwt-secret", TEST_SECRET, *self.args,
        ]  # fmt: skip
        stderr = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=self.env)
        if self.log_path:
            stderr.close()  # type: ignore[union-attr]
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith(b"ringlog listening on "):
                self.url = line.decode().split(" on ", 1)[1].strip()
                self.port = int(self.url.rsplit(":", 1)[1])
                return self
        self.proc.kill()
        raise RuntimeError(f"ringlog serve did not start (last line {line!r}); see {self.log_path}")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait, return the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._close()

    def kill(self) -> None:
        """SIGKILL: a real crash."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
            self._close()
