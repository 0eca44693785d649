"""The aiohttp application factory: ``create_app(settings)``."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from importlib import resources

from aiohttp import web

from eventstore.factory import open_store
from eventstore.store import Store
from projections.feed_index import FeedProjector
from projections.runner import DraftProjector
from server import routes as rest
from server.auth import Authenticator
from server.feed_mux import install as install_feed
from server.front import front_middleware
from server.hub import Hub
from server.metrics import Metrics
from server.openapi import openapi_document
from server.peerlimits import PeerLimits
from server.presence import PresenceRegistry
from server.presence_mux import register_presence
from server.presence_peers import PresenceReplicator
from server.presence_wire import PresenceFanout
from server.protocol_log import install_protocol_refusal_filter
from server.ratelimit import RateLimiter
from server.service import DraftService
from server.settings import MAX_BODY_BYTES, Settings
from server.state import AppState
from server.ws import draft_socket
from server.ws_mux import multi_socket
from server.ws_registry import SocketRegistry

log = logging.getLogger(__name__)

SOCKET_HANDLERS = frozenset((draft_socket, multi_socket))
"""The WebSocket routes' handlers: the front middleware hands them to aiohttp unwrapped."""

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
)


async def _index(request: web.Request) -> web.StreamResponse:
    html = resources.files("server").joinpath("static/index.html").read_bytes()
    return web.Response(
        body=html,
        content_type="text/html",
        headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"},
    )


async def _favicon(request: web.Request) -> web.Response:
    """``/favicon.ico``, which browsers ask for on pages that name no icon (the JS, the JSON)."""
    svg = resources.files("server").joinpath("static/favicon.svg").read_bytes()
    return web.Response(
        body=svg, content_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"}
    )


async def _openapi(request: web.Request) -> web.Response:
    st = request.app[AppState.KEY]
    return web.json_response(openapi_document(st.settings))


def create_app(settings: Settings, store: Store | None = None) -> web.Application:
    """Build the app; the store is opened and closed with the app's lifetime.

    Also makes aiohttp's refusals of malformed requests one log line each
    (:mod:`server.protocol_log`)."""
    install_protocol_refusal_filter()
    store = (
        store
        if store is not None
        else open_store(
            settings.db, synchronous=settings.synchronous, pool_size=settings.pool_size, shared=True
        )
    )
    metrics = Metrics()
    projector = DraftProjector(store)
    # heartbeats three times per expiry: a dead process is dropped within 1.17 × expiry (≤ 23.3 s)
    store.peer_bus.set_timing(settings.peer_expiry / 3, settings.peer_expiry)
    limiter = RateLimiter(settings.rate_limit)
    sockets = SocketRegistry()
    peer_limits = PeerLimits(store.peer_bus, limiter, sockets.count, sockets.counts)
    sockets.on_change = peer_limits.sockets.changed
    state = AppState(
        settings=settings,
        store=store,
        projector=projector,
        service=DraftService(store, projector, settings.limits),
        hub=Hub(
            store,
            max_backlog_bytes=settings.ws_queue_bytes,
            max_backlog_events=settings.ws_queue_size,
            observe_lag=metrics.fanout_lag.observe,
            page_cache_bytes=settings.catch_up_cache_bytes,
        ),
        auth=Authenticator(settings),
        limiter=limiter,
        metrics=metrics,
        sockets=sockets,
        peer_limits=peer_limits,
        feed=FeedProjector(store),
        presence=(presence := PresenceRegistry(node_id=store.peer_bus.node_id)),
        presence_peers=PresenceReplicator(store.peer_bus, presence),
    )
    metrics.feed_lag.set_function(lambda: state.feed.lag)
    install_feed(state.mux)  # subscribe_me on /v1/ws
    state.presence.add_observer(PresenceFanout(state.hub, state.metrics.presence_messages.inc).on_change)
    metrics.track_presence(state.presence.stats)
    register_presence(state.mux, state.presence, settings.presence_rate, metrics)
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[front_middleware(settings.allowed_origins, metrics, SOCKET_HANDLERS)],
    )
    app[AppState.KEY] = state
    app.add_routes(rest.routes)
    app.router.add_get("/v1/ws/drafts/{draft_id}", draft_socket)
    app.router.add_get("/v1/ws", multi_socket)
    app.router.add_get("/openapi.json", _openapi)
    app.router.add_get("/", _index)
    app.router.add_get("/favicon.ico", _favicon)
    static_dir = resources.files("server").joinpath("static")
    app.router.add_static("/static/", str(static_dir), append_version=False)
    if settings.workers != 1:
        app.on_response_prepare.append(_name_the_worker)
    app.cleanup_ctx.append(_lifetime)
    app.on_shutdown.append(_close_sockets)
    return app


WORKER_HEADER = "X-Ringlog-Worker"
"""Response header naming the process that answered, under ``--workers`` (docs/API.md)."""


async def _name_the_worker(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[WORKER_HEADER] = str(os.getpid())


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    st = app[AppState.KEY]
    await st.store.open()
    try:
        await st.projector.start()
    except BaseException:
        await st.store.close()
        raise
    try:
        await st.feed.start()
    except BaseException:
        await st.projector.stop()
        await st.store.close()
        raise
    log.info("store open: %r", _redact(st.settings.db))
    st.peer_limits.start()
    st.presence_peers.start()
    try:
        yield
    finally:
        st.stopping.set()
        st.presence_peers.close()
        await st.peer_limits.close()
        await st.feed.stop()
        try:
            await st.projector.stop()  # stops its tasks, saves the last snapshots (logs what it cannot)
        except Exception:
            log.exception("the projector did not stop cleanly")
        await st.store.close()  # finishes appends already queued for the writer
        log.info("store closed")


async def _close_sockets(app: web.Application) -> None:
    st = app[AppState.KEY]
    st.stopping.set()
    await st.sockets.close_all(timeout=st.settings.drain_timeout)


def _redact(url: str) -> str:
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
