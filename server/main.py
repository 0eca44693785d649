"""``ringlog serve``: run the app until SIGTERM/SIGINT, then drain and exit 0."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from aiohttp import web

from eventstore.errors import StoreError
from eventstore.ownership import acquire_writer_lock
from server.app import create_app
from server.settings import Settings
from server.supervisor import STOP_GRACE, Supervisor, heartbeat_interval, worker_count

log = logging.getLogger("ringlog")


class JsonFormatter(logging.Formatter):
    """One JSON object per log line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(settings: Settings) -> None:
    """Only the CLI configures logging."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def serve(settings: Settings) -> int:
    """Run the server in the foreground; returns the exit status.

    Exit status (docs/API.md "Exit status of every ``ringlog`` command"): 0 after a drain; 1 when
    the store cannot be opened (unreachable, unreadable, a migration that could not take its
    lock) or is held by an offline writing tool (a draft the projector cannot fold is set aside,
    not a reason to refuse: :attr:`~projections.runner.DraftProjector.set_aside`); 2 when the port cannot be bound (settings are
    refused as usage errors before this is called). Refuses to start (one log line naming the
    file, status 1) while an offline writing tool (``rebuild``, ``copy --to``) owns the SQLite log (:mod:`eventstore.ownership`); servers share
    the lock, held until the process ends. On PostgreSQL the serving store takes the shared lock
    itself when it opens (its LISTEN connection), and refuses the same way. With ``settings.workers`` other than 1 this process
    becomes the supervisor of that many workers (:mod:`server.supervisor`).
    """
    configure_logging(settings)
    try:
        lock = acquire_writer_lock(settings.db, shared=True)
    except StoreError as e:
        log.error("cannot start: %s", e)
        return 1
    # The store's writer and readers are threads that hand work back and forth with the event
    # loop many times a second. With the default 5 ms switch interval a thread that wants the
    # GIL back waits up to 5 ms while the loop is busy: group commits then take tens of ms.
    sys.setswitchinterval(0.0005)
    # Every socket and request allocates a few hundred container objects, most of them alive as
    # long as the socket. With CPython's default young-generation threshold (700 allocations) the
    # cyclic collector ran so often during a connect storm that it took half the server's CPU
    # (py-spy; 10,000 sockets: 5.2 s of CPU, 2.6 s with the collector off, 3.0-3.2 s with this
    # threshold, docs/BENCHMARKS.md "Issue 16: lean sockets"). Cycles are still collected.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    with lock:
        count = worker_count(settings)
        if count > 1:
            return Supervisor(settings, count, _run_worker).run()
        return _run(_serve(settings))


GC_YOUNG_THRESHOLD = 10_000
"""Allocations (minus deallocations) of container objects between young-generation collections."""


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop when it is installed (the ``fast`` extra), else on asyncio's loop.

    The choice is made before the loop starts, so no exception the server later logs carries a
    chained ``ImportError`` from the look-up.
    """
    try:
        import uvloop
    except ImportError:
        uvloop_run = None
    else:
        uvloop_run = uvloop.run
    if uvloop_run is None:  # outside the handler: nothing logged later chains the ImportError
        return asyncio.run(main)
    status: int = uvloop_run(main)
    return status


def _run_worker(settings: Settings, report_alive: Callable[[], None]) -> int:
    """One worker of a supervisor: serve on the shared port (``SO_REUSEPORT``), report that it
    listens and then every :func:`~server.supervisor.heartbeat_interval` seconds that its loop
    turns, drain."""
    return _run(_serve(settings, reuse_port=True, report_alive=report_alive))


async def _serve(
    settings: Settings, *, reuse_port: bool = False, report_alive: Callable[[], None] | None = None
) -> int:
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=settings.drain_timeout)
    try:
        await runner.setup()
    except StoreError as e:
        log.error("cannot start: %s", e)
        return 1
    site = web.TCPSite(runner, settings.host, settings.port, backlog=2048, reuse_port=reuse_port or None)
    try:
        await site.start()
    except OSError as e:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, e)
        await runner.cleanup()
        return 2
    server = getattr(site, "_server", None)
    port = server.sockets[0].getsockname()[1] if server is not None and server.sockets else settings.port
    heartbeat: asyncio.Task[None] | None = None
    if report_alive is not None:  # a worker: the supervisor prints the one line, and watches it
        report_alive()
        heartbeat = asyncio.create_task(_report_every(report_alive, heartbeat_interval(settings)))
    else:
        # A machine-readable line: tests and scripts wait for it (with --port 0 it names the port).
        sys.stdout.write(f"ringlog listening on http://{settings.host}:{port}\n")
        sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("draining: closing sockets with 1001, finishing in-flight requests")
    cleanup = asyncio.ensure_future(runner.cleanup())
    limit = settings.drain_timeout + STOP_GRACE
    await asyncio.wait({cleanup}, timeout=limit)  # never cancels it: that could wait as long
    if not cleanup.done():
        # Seen when the database went away mid-drain (a pool connection left busy): the drain
        # must still end, as the supervisor's kill of a straggler would end it. Nothing more can
        # be saved; what was acknowledged is in the store already.
        log.error(
            "the drain did not end within %.0f s (drain timeout + %.0f s); exiting anyway", limit, STOP_GRACE
        )
        logging.shutdown()
        os._exit(1)
    cleanup.result()
    if heartbeat is not None:
        heartbeat.cancel()
    log.info("stopped")
    return 0


async def _report_every(report: Callable[[], None], seconds: float) -> None:
    """Call ``report()`` every ``seconds`` from the event loop, until cancelled: a stopped
    process or a blocked loop stops reporting, which is what the supervisor watches for."""
    while True:
        await asyncio.sleep(seconds)
        report()
