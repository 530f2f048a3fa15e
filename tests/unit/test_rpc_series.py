"""The gate's RPC series (ops/metrics.py RpcSeries) expose exactly what prometheus_client's
labelled Counter and Histogram exposed for the same calls: names, labels, buckets, sums."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from hybridcache.server.ops.metrics import _LATENCY_BUCKETS, Metrics

pytestmark = pytest.mark.timeout(30)

CALLS = [
    ("GetCreditCost", "unary", "OK", 0.0004),
    ("GetCreditCost", "unary", "OK", 0.0005),  # on a bucket's bound: counted in that bucket (le)
    ("GetCreditCost", "unary", "NOT_FOUND", 0.003),
    ("WatchChanges", "server_stream", "CANCELLED", 7.5),  # beyond the last bound: +Inf only
    ("GetUserProfile", "unary", "OK", 0.02),
]


def _reference() -> str:
    """The same calls through prometheus_client's own metrics, as the gate used to count them."""
    r = CollectorRegistry()
    started = Counter("grpc_server_started", "RPCs started.", ["grpc_method", "grpc_type"], registry=r)
    handled = Counter(
        "grpc_server_handled", "RPCs completed, by status code.", ["grpc_method", "grpc_code"], registry=r
    )
    seconds = Histogram(
        "grpc_server_handling_seconds",
        "Time to handle an RPC.",
        ["grpc_method"],
        buckets=_LATENCY_BUCKETS,
        registry=r,
    )
    for method, kind, code, s in CALLS:
        started.labels(method, kind).inc()
        handled.labels(method, code).inc()
        seconds.labels(method).observe(s)
    return generate_latest(r).decode()


def _samples(text: str) -> set[str]:
    # `_created` samples are prometheus_client's creation timestamps: not compared.
    return {line for line in text.splitlines() if line.startswith("grpc_server") and "_created" not in line}


def test_the_series_expose_what_prometheus_clients_metrics_exposed() -> None:
    metrics = Metrics()
    for method, kind, code, s in CALLS:
        series = metrics.rpc_series(method, kind)
        series.start()
        series.end(code, s)
    ours = generate_latest(metrics.registry).decode()
    assert _samples(ours) == _samples(_reference()), "the exposition differs from prometheus_client's"
    assert "# TYPE grpc_server_handling_seconds histogram" in ours
    assert "# TYPE grpc_server_started_total counter" in ours or "# TYPE grpc_server_started counter" in ours


def test_one_series_per_method_and_no_increment_lost_across_threads() -> None:
    metrics = Metrics()
    assert metrics.rpc_series("GetCreditCost", "unary") is metrics.rpc_series("GetCreditCost", "unary")

    def calls() -> None:
        series = metrics.rpc_series("GetCreditCost", "unary")
        for _ in range(20_000):
            series.start()
            series.end("OK", 0.001)

    threads = [threading.Thread(target=calls) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = metrics.rpc_series("GetCreditCost", "unary").read()
    assert counts.started == 80_000
    assert counts.handled == {"OK": 80_000}
    assert sum(counts.buckets) == 80_000
    assert counts.seconds_sum == pytest.approx(80.0)
