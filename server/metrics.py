"""Prometheus metrics, in a registry owned by the app (no process-wide globals)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Open sockets, events appended, fan-out lag, request latency."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.open_sockets = Gauge("ringlog_open_sockets", "WebSockets currently open", registry=r)
        self.subscriptions = Gauge(
            "ringlog_ws_subscriptions", "Draft subscriptions open on /v1/ws sockets", registry=r
        )
        self.events_appended = Counter(
            "ringlog_events_appended_total", "Events appended through this node", ["type"], registry=r
        )
        self.fanout_lag = Histogram(
            "ringlog_fanout_lag_seconds",
            "Time from commit to the event's frame being written to a socket",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_latency = Histogram(
            "ringlog_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.slow_closes = Counter(
            "ringlog_ws_slow_closes_total", "Sockets closed with 1013 because they fell behind", registry=r
        )
        self.rate_limited = Counter("ringlog_rate_limited_total", "Requests refused with 429", registry=r)
        self.feed_lag = Gauge(
            "ringlog_feed_index_lag_positions",
            "Positions published to this process that its feed index has not folded yet",
            registry=r,
        )
        self.presence_messages = Counter(
            "ringlog_presence_messages_total", "Presence messages offered to sockets", registry=r
        )
        self.presence_coalesced = Counter(
            "ringlog_presence_coalesced_total",
            "Presence updates replaced by a newer one of the same socket before being applied",
            registry=r,
        )

    def track_presence(self, stats: Callable[[], Mapping[str, int]]) -> None:
        """Presence gauges read from ``stats()`` (:meth:`server.presence.PresenceRegistry.stats`)
        when scraped: entries, and the bytes of their states."""
        r = self.registry
        Gauge(
            "ringlog_presence_entries", "Presence entries (draft, user) known to this process", registry=r
        ).set_function(lambda: stats()["entries"])
        Gauge(
            "ringlog_presence_state_bytes",
            "JSON bytes of the presence states held by this process",
            registry=r,
        ).set_function(lambda: stats()["state_bytes"])

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
