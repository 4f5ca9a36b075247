"""Prometheus metrics of one app: its own registry, so two apps in one process never collide.

Request metrics are recorded by the HTTP middleware and rows predicted by the predictor; job
counts, queue depth and epochs run are read from the metadata store when Prometheus scrapes,
so they hold across every API and worker process that shares the store.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from service.jobs.status import ALL
from service.serving.predictor import Predictor
from service.store.metadata import MetadataStore

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# predict answers in well under a millisecond; the low buckets are where it lives
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)


class JobsCollector(Collector):
    """Jobs by status, queue depth and epochs run, read at scrape time (one query)."""

    def __init__(self, meta: MetadataStore) -> None:
        self.meta = meta

    def describe(self) -> list[Metric]:
        return []  # registering must not query the store

    def collect(self) -> Iterator[Metric]:
        counts, epochs = self.meta.job_stats()
        jobs = GaugeMetricFamily("fitserve_jobs", "Jobs by status.", labels=["status"])
        for status in ALL:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        yield GaugeMetricFamily(
            "fitserve_queue_depth", "Jobs queued and waiting for a worker.",
            value=counts.get("queued", 0),
        )
        yield CounterMetricFamily(
            "fitserve_epochs",
            "Training epochs run by all jobs (rate() of it: epochs per second).",
            value=epochs,
        )


class PredictCollector(Collector):
    """Rows predicted, and requests per model version: the predict paths count into plain
    ints, the cheapest thing a hot path can do; they become counters here, when Prometheus
    asks."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "fitserve_predict_rows",
            "Rows predicted, v1 and v2 (rate() of it: rows per second).",
            value=self.predictor.rows_predicted,
        )
        requests = CounterMetricFamily(
            "fitserve_predict_requests",
            "Predict requests answered per model version, v1 and v2 (a traffic split's "
            "share of each version).", labels=["tenant", "model", "version"])
        labels = self.predictor.model_labels
        for model_id, n in list(self.predictor.requests_by_model.items()):
            requests.add_metric(list(labels[model_id]), n)
        yield requests


class RequestStats(Collector):
    """Requests by (method, route, status) and latency histograms by (method, route), kept
    as plain numbers and turned into metric families when Prometheus scrapes.

    prometheus_client's Counter and Histogram take a lock per update and walk the buckets in
    Python; on the predict path that cost more than the prediction. Updates come from the
    event loop's thread only, so plain ints need no lock."""

    def __init__(self, buckets: tuple[float, ...] = _LATENCY_BUCKETS) -> None:
        self.bounds = buckets
        self._les = [floatToGoString(b) for b in buckets] + ["+Inf"]
        self.counts: dict[tuple[str, str, int], int] = {}
        # (method, route) -> [sum of seconds, then one count per bucket, +Inf last]
        self.latency: dict[tuple[str, str], list[float]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in _METHODS:  # any token is a method in HTTP; labels must stay few
            method = "OTHER"
        key = (method, route, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        h = self.latency.get((method, route))
        if h is None:
            h = self.latency[(method, route)] = [0.0] * (len(self.bounds) + 2)
        h[0] += seconds
        h[1 + bisect_left(self.bounds, seconds)] += 1  # le: a bound equal to it counts it

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "fitserve_http_requests", "HTTP requests by route template and status.",
            labels=["method", "route", "status"])
        for (method, route, status), n in list(self.counts.items()):
            requests.add_metric([method, route, str(status)], n)
        yield requests
        latency = HistogramMetricFamily(
            "fitserve_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response.",
            labels=["method", "route"])
        for (method, route), h in list(self.latency.items()):
            h = list(h)
            cumulative = list(accumulate(h[1:]))
            latency.add_metric([method, route], list(zip(self._les, cumulative, strict=True)),
                               sum_value=h[0])
        yield latency


class Telemetry:
    def __init__(
        self, meta: MetadataStore | None = None, predictor: Predictor | None = None
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = RequestStats()
        self.registry.register(self.requests)
        if meta is not None:
            self.registry.register(JobsCollector(meta))
        if predictor is not None:
            self.registry.register(PredictCollector(predictor))
        self.observe_request = self.requests.observe

    def exposition(self) -> tuple[bytes, str]:
        """The text format Prometheus scrapes, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
