"""The lock-free fan-out histogram exposes what prometheus_client's Histogram would (issue 16)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from server.metrics import LATENCY_BUCKETS, LoopHistogram, Metrics


def _exposition(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


@given(st.lists(st.floats(min_value=0.0, max_value=50.0), max_size=40))
def test_same_exposition_as_prometheus_histogram(values: list[float]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop_histogram = LoopHistogram("lag_seconds", "lag", LATENCY_BUCKETS, ours)
    reference = Histogram("lag_seconds", "lag", buckets=LATENCY_BUCKETS, registry=theirs)
    for value in values:
        loop_histogram.observe(value)
        reference.observe(value)
    assert _exposition(ours) == _exposition(theirs)


def test_bound_values_count_in_their_bucket() -> None:
    registry = CollectorRegistry()
    histogram = LoopHistogram("lag_seconds", "lag", (0.5, 1.0), registry)
    for value in (0.5, 1.0, 1.5):
        histogram.observe(value)
    text = generate_latest(registry).decode()
    assert 'lag_seconds_bucket{le="0.5"} 1.0' in text
    assert 'lag_seconds_bucket{le="1.0"} 2.0' in text
    assert 'lag_seconds_bucket{le="+Inf"} 3.0' in text
    assert "lag_seconds_sum 3.0" in text


def test_app_metrics_render_the_fanout_lag() -> None:
    metrics = Metrics()
    metrics.fanout_lag.observe(0.003)
    text = metrics.render().decode()
    assert "# TYPE ringlog_fanout_lag_seconds histogram" in text
    assert 'ringlog_fanout_lag_seconds_bucket{le="0.005"} 1.0' in text
    assert "ringlog_fanout_lag_seconds_count 1.0" in text
