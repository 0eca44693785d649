"""Everything a running app owns, stored on the ``web.Application`` under one AppKey."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import ClassVar

from aiohttp import web

from eventstore.store import Store
from projections.feed_index import FeedProjector
from projections.runner import DraftProjector
from server.auth import Authenticator
from server.hub import Hub
from server.metrics import Metrics
from server.mux_hooks import MuxExtensions
from server.peerlimits import PeerLimits
from server.presence import PresenceRegistry
from server.presence_peers import PresenceReplicator
from server.ratelimit import RateLimiter
from server.service import DraftService
from server.settings import Settings
from server.ws_registry import SocketRegistry


@dataclass
class AppState:
    """The app's resources; built by ``create_app``, opened and closed in its cleanup context."""

    KEY: ClassVar[web.AppKey[AppState]]

    settings: Settings
    store: Store
    projector: DraftProjector
    service: DraftService
    hub: Hub
    auth: Authenticator
    limiter: RateLimiter
    metrics: Metrics
    presence: PresenceRegistry
    presence_peers: PresenceReplicator
    """Keeps ``presence`` in step with the store's other processes (the peer bus)."""
    sockets: SocketRegistry
    peer_limits: PeerLimits
    """The socket cap and rate limit shared with the other processes of the store."""
    feed: FeedProjector
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    mux: MuxExtensions = field(default_factory=MuxExtensions)
    """What presence and the user's feed add to ``/v1/ws`` (:mod:`server.mux_hooks`)."""


AppState.KEY = web.AppKey("ringlog", AppState)
