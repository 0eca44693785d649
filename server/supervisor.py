"""``ringlog serve --workers N``: one supervisor, N worker processes accepting on one port.

The supervisor holds the store's shared writer lock (:mod:`eventstore.ownership`), reserves the
port (with ``--port 0`` it picks one, so every worker and every restart binds the same one), and
forks the workers. Each worker is a complete ``ringlog serve`` (its own event loop, store, group
committer, projector and hub) listening with ``SO_REUSEPORT``: the kernel spreads new
connections over the listening workers. The supervisor's reserving socket is bound but never
listens, so it takes no connection. Workers coordinate only through the store: SQLite
serialises their appends and each learns of the others' commits by commit discovery
(:mod:`eventstore.discovery`); PostgreSQL workers are nodes like any other.

Life cycle:

- Each worker reports on a pipe once it listens; when all have, the supervisor prints the one
  ``ringlog listening on http://HOST:PORT`` line.
- Each worker's event loop then reports on the same pipe every :func:`heartbeat_interval`
  seconds (1 s, or a quarter of ``--worker-timeout`` if that is shorter). One
  that has not reported for ``--worker-timeout`` seconds (``SIGSTOP``, a blocked loop, a hung
  system call) still owns a share of the port — the kernel keeps queueing new connections on its
  listening socket, where nobody accepts them — so the supervisor kills it (``SIGKILL``) and it
  is replaced like a worker that died.
- A worker that exits (crash, ``kill -9``, OOM) is started again after a back-off that doubles
  from :data:`RESTART_FIRST` to at most :data:`RESTART_MAX` seconds and resets once a worker has
  served for :data:`RESTART_RESET` seconds. A worker that exits with an error before it ever
  listened, and before the first "listening" line, refused to start (status 1: the store cannot
  be opened; 2: the port cannot be bound): the supervisor stops the others and exits with that
  status, like a single process would, instead of retrying a setup that cannot work.
- SIGTERM/SIGINT are forwarded to every worker, which drains as a single process does; the
  supervisor exits 0 when all have exited 0 (1 otherwise), killing stragglers after the drain
  timeout plus :data:`STOP_GRACE` seconds.
- A worker whose supervisor dies is sent SIGTERM by the kernel (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from server.settings import Settings

log = logging.getLogger("ringlog.supervisor")

RESTART_FIRST = 0.1
"""Seconds before the first restart of a worker that died."""
RESTART_MAX = 10.0
"""The longest pause between restarts of a worker that keeps dying."""
RESTART_RESET = 30.0
"""Seconds a worker must serve before its back-off starts again from :data:`RESTART_FIRST`."""
START_TIMEOUT = 60.0
"""Seconds the first start of all workers may take before the supervisor gives up (status 2)."""
STOP_GRACE = 10.0
"""Seconds beyond the drain timeout before workers that have not exited are killed."""
TICK = 0.05
"""Seconds between the supervisor's checks of its children (it waits on their pipes meanwhile)."""
HEARTBEAT = 1.0
"""Longest pause (seconds) between a listening worker's reports that its event loop turns."""


def heartbeat_interval(settings: Settings) -> float:
    """Seconds between a worker's reports: :data:`HEARTBEAT`, or a quarter of
    ``--worker-timeout`` when that is shorter, so that a healthy worker reports several times
    within the timeout (never more often than every 10 ms)."""
    timeout = settings.worker_timeout
    return max(0.01, min(HEARTBEAT, timeout / 4)) if timeout else HEARTBEAT


WorkerMain = Callable[[Settings, Callable[[], None]], int]
"""Runs one worker: ``(settings with the chosen port, report_alive) -> exit status``. The worker
calls ``report_alive()`` once it listens and then every :func:`heartbeat_interval` seconds from
its event loop; it never blocks (a full pipe drops the report)."""


def worker_count(settings: Settings) -> int:
    """The number of worker processes ``settings.workers`` asks for (0: one per core)."""
    return settings.workers or os.cpu_count() or 1


@dataclass
class _Slot:
    index: int
    pid: int = 0
    ready_fd: int = -1
    ready: bool = False
    started: float = 0.0
    last_report: float = 0.0
    killed: bool = False
    failures: int = 0
    restart_at: float | None = None


class Supervisor:
    """Starts, watches and stops the workers of one ``ringlog serve --workers N``."""

    def __init__(self, settings: Settings, count: int, worker_main: WorkerMain) -> None:
        self.settings = settings
        self.count = count
        self.worker_main = worker_main
        self.port = settings.port
        self._slots = [_Slot(i) for i in range(count)]
        self._selector = selectors.DefaultSelector()
        self._stopping = False
        self._announced = False

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit status (0 after a clean drain)."""
        try:
            reserve = self._reserve_port()
        except OSError as e:
            log.error("cannot listen on %s:%s: %s", self.settings.host, self.settings.port, e)
            return 2
        previous = {sig: signal.signal(sig, self._on_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            with reserve:
                self.settings = _with_port(self.settings, self.port)
                for slot in self._slots:
                    self._spawn(slot, reserve)
                return self._watch(reserve)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._selector.close()

    def _on_stop(self, _sig: int, _frame: object) -> None:
        self._stopping = True

    def _reserve_port(self) -> socket.socket:
        """Bind (never listen) the port the workers will share; with port 0, choose it.

        ``SO_REUSEPORT`` lets any process of the same user join a port whose sockets all set it,
        so a second supervisor would otherwise share this port with us and split the requests
        between two logs. First the port is bound *without* it: that fails with ``EADDRINUSE``
        (raised as ``OSError``) while anything else listens there, as a one-process server's bind
        would.
        """
        host, port = self.settings.host, self.settings.port
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        if port != 0:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        return sock

    def _spawn(self, slot: _Slot, reserve: socket.socket) -> None:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            status = 70
            try:
                os.close(read_fd)
                reserve.close()
                self._selector.close()
                for other in self._slots:
                    if other.ready_fd >= 0:
                        os.close(other.ready_fd)
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                _die_with_parent()

                os.set_blocking(write_fd, False)

                def report_alive() -> None:
                    with contextlib.suppress(OSError):  # a full pipe (BlockingIOError): dropped
                        os.write(write_fd, b"L")

                status = self.worker_main(self.settings, report_alive)
            except BaseException:  # never return into the supervisor's stack in the child
                log.exception("worker %d failed", slot.index)
            finally:
                logging.shutdown()
                os._exit(status)
        os.close(write_fd)
        slot.pid, slot.ready_fd, slot.ready, slot.started, slot.restart_at, slot.killed = (
            pid,
            read_fd,
            False,
            time.monotonic(),
            None,
            False,
        )
        self._selector.register(read_fd, selectors.EVENT_READ, slot)
        log.info("worker %d started (pid %d)", slot.index, pid)

    def _watch(self, reserve: socket.socket) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        last_turn = time.monotonic()
        while not self._stopping:
            self._read_reports()
            turn = time.monotonic()
            if turn - last_turn > HEARTBEAT:  # the supervisor itself was stopped (SIGSTOP, ^Z, a
                # frozen cgroup): the workers' silence meanwhile is not theirs to answer for
                for slot in self._slots:
                    slot.last_report += turn - last_turn
                    slot.started += turn - last_turn
            last_turn = turn
            failed = self._reap()
            if failed is not None:
                return self._stop_all(failed)
            if not self._announced:
                if all(s.ready for s in self._slots):
                    self._announced = True
                    log.info(
                        "%d workers listening (pids %s)",
                        self.count,
                        ", ".join(str(s.pid) for s in self._slots),
                    )
                    sys.stdout.write(f"ringlog listening on http://{self.settings.host}:{self.port}\n")
                    sys.stdout.flush()
                elif time.monotonic() > deadline:
                    log.error("cannot start: the workers did not listen within %.0fs", START_TIMEOUT)
                    return self._stop_all(2)
            now = time.monotonic()
            self._kill_silent(now)
            for slot in self._slots:
                if slot.restart_at is not None and now >= slot.restart_at:
                    self._spawn(slot, reserve)
        log.info("stopping: forwarding SIGTERM to %d workers", self.count)
        return self._stop_all(0)

    def _read_reports(self) -> None:
        for key, _ in self._selector.select(TICK):
            slot: _Slot = key.data
            try:
                reports = os.read(slot.ready_fd, 4096)
            except OSError:
                reports = b""
            if reports:
                slot.ready, slot.last_report = True, time.monotonic()
            else:  # end of file: the worker has exited (its status comes from waitpid)
                self._forget_pipe(slot)

    def _kill_silent(self, now: float) -> None:
        """SIGKILL every live worker that has not reported for ``--worker-timeout`` seconds
        (:data:`START_TIMEOUT` for a restarted one that has not listened yet); :meth:`_reap`
        then replaces it. Not before the first "listening" line: until then START_TIMEOUT ends
        the supervisor instead."""
        timeout = self.settings.worker_timeout
        if not timeout or not self._announced:
            return
        for slot in self._slots:
            if not slot.pid or slot.killed:
                continue
            silent = now - (slot.last_report if slot.ready else slot.started)
            if silent > (timeout if slot.ready else max(timeout, START_TIMEOUT)):
                log.error(
                    "worker %d (pid %d) has not reported for %.1fs (stopped, or its event loop is "
                    "blocked); killing it",
                    slot.index,
                    slot.pid,
                    silent,
                )
                slot.killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGKILL)

    def _forget_pipe(self, slot: _Slot) -> None:
        if slot.ready_fd >= 0:
            self._selector.unregister(slot.ready_fd)
            os.close(slot.ready_fd)
            slot.ready_fd = -1

    def _reap(self) -> int | None:
        """Collect exited workers and schedule their restarts; a status to exit with, or None."""
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            slot = next((s for s in self._slots if s.pid == pid), None)
            if slot is None:
                continue
            status = os.waitstatus_to_exitcode(wait_status)
            self._forget_pipe(slot)
            slot.pid = 0
            if self._stopping:
                continue
            if not self._announced and not slot.ready and status > 0:
                # It never listened: the store cannot be opened (1) or the port bound (2). A
                # restart would fail the same way, so exit as a single process would have.
                log.error("worker %d refused to start (status %d)", slot.index, status)
                return status
            now = time.monotonic()
            if slot.ready and now - slot.started >= RESTART_RESET:
                slot.failures = 0
            delay = min(RESTART_FIRST * 2**slot.failures, RESTART_MAX)
            slot.failures += 1
            slot.restart_at = now + delay
            log.warning(
                "worker %d (pid %d) exited with status %d; restarting in %.1fs",
                slot.index,
                pid,
                status,
                delay,
            )

    def _stop_all(self, status: int) -> int:
        """SIGTERM every live worker, wait for all (killing stragglers); the exit status."""
        self._stopping = True
        for slot in self._slots:
            if slot.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGTERM)
                    os.kill(
                        slot.pid, signal.SIGCONT
                    )  # a stopped worker drains instead of waiting to be killed
        deadline = time.monotonic() + self.settings.drain_timeout + STOP_GRACE
        clean = True
        while any(s.pid for s in self._slots):
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                if time.monotonic() > deadline:
                    for slot in self._slots:
                        if slot.pid:
                            log.error(
                                "worker %d (pid %d) did not drain in time; killing it", slot.index, slot.pid
                            )
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(slot.pid, signal.SIGKILL)
                    deadline = float("inf")
                    clean = False
                time.sleep(TICK)
                continue
            for slot in self._slots:
                if slot.pid == pid:
                    slot.pid = 0
                    code = os.waitstatus_to_exitcode(wait_status)
                    # a worker still starting has no handler yet: SIGTERM ends it, which is clean
                    clean = clean and (code == 0 or (code == -signal.SIGTERM and not slot.ready))
        for slot in self._slots:
            self._forget_pipe(slot)
        if status == 0 and not clean:
            return 1
        log.info("all workers stopped")
        return status


def _with_port(settings: Settings, port: int) -> Settings:
    from dataclasses import replace

    return replace(settings, port=port)


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM this process when its parent (the supervisor) dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
