"""Metrics.child: the labelled children are kept, and what is exported is unchanged."""

from __future__ import annotations

import re

from server.metrics import LABELLED_CACHE, Metrics


def test_a_kept_child_counts_into_the_exported_series() -> None:
    m = Metrics()
    first = m.child(m.events_appended, "collab.segment_added")
    assert m.child(m.events_appended, "collab.segment_added") is first
    first.inc()
    m.child(m.events_appended, "collab.segment_added").inc()
    m.child(m.request_latency, "POST", "/v1/collab/drafts", "201").observe(0.002)
    text = m.render().decode()
    assert re.search(r'^ringlog_events_appended_total\{type="collab.segment_added"\} 2\.0$', text, re.M)
    assert re.search(
        r'^ringlog_http_request_duration_seconds_count\{method="POST",route="/v1/collab/drafts",status="201"\} 1\.0$',
        text,
        re.M,
    )


def test_the_cache_is_bounded_and_later_labels_still_count() -> None:
    m = Metrics()
    for i in range(LABELLED_CACHE + 10):
        m.child(m.events_appended, f"t{i}").inc()
    late = f"t{LABELLED_CACHE + 5}"
    m.child(m.events_appended, late).inc()
    assert len(m._children) == LABELLED_CACHE
    assert re.search(rf'^ringlog_events_appended_total\{{type="{late}"\}} 2\.0$', m.render().decode(), re.M)
