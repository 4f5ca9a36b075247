"""Request metrics kept as plain numbers come out as Prometheus counters and histograms."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.telemetry import RequestStats


def _scrape(stats: RequestStats) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(stats)
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_histogram_buckets_are_cumulative_and_include_their_bound():
    stats = RequestStats(buckets=(0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 1.0, 3.0):
        stats.observe("GET", "/r", 200, seconds)
    got = _scrape(stats)
    labels = (("method", "GET"), ("route", "/r"))

    def bucket(le: str) -> float:
        key = tuple(sorted((*labels, ("le", le))))
        return got[("fitserve_http_request_duration_seconds_bucket", key)]

    assert (bucket("0.1"), bucket("1.0"), bucket("+Inf")) == (2, 4, 5)
    assert got[("fitserve_http_request_duration_seconds_count", labels)] == 5
    assert got[("fitserve_http_request_duration_seconds_sum", labels)] == pytest.approx(4.65)
    assert got[("fitserve_http_requests_total", (*labels, ("status", "200")))] == 5


def test_statuses_are_separate_series_and_odd_methods_one():
    stats = RequestStats()
    stats.observe("POST", "/p", 200, 0.001)
    stats.observe("POST", "/p", 422, 0.001)
    stats.observe("BREW", "/p", 405, 0.001)
    stats.observe("COFFEE", "/p", 405, 0.001)
    got = _scrape(stats)
    total = "fitserve_http_requests_total"
    assert got[(total, (("method", "POST"), ("route", "/p"), ("status", "200")))] == 1
    assert got[(total, (("method", "POST"), ("route", "/p"), ("status", "422")))] == 1
    assert got[(total, (("method", "OTHER"), ("route", "/p"), ("status", "405")))] == 2
    assert not any(("method", "BREW") in labels for _, labels in got)
