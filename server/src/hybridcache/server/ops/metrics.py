"""Prometheus metrics, on a registry of the service's own, served on their own port.

Hot-path counters the core already keeps (hits, misses, stale per kind; subscriber counts)
are NOT counted twice: a collector reads them at scrape time, so a cache hit pays nothing
for metrics; state such as freshness is read so too (ops/telemetry.py). What is declared
here is updated where it happens (tests/unit/test_metrics_coverage.py holds both to that).
Labels are low-cardinality only: method, code, kind, result, reason, tenant (tenants are
few and configured; user ids, keys and callers' tokens never become labels).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpc_started = Counter(
            "grpc_server_started", "RPCs started.", ["grpc_method", "grpc_type"], registry=r
        )
        self.rpc_handled = Counter(
            "grpc_server_handled", "RPCs completed, by status code.", ["grpc_method", "grpc_code"], registry=r
        )
        self.rpc_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time to handle an RPC.",
            ["grpc_method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.wrapper_fetch_seconds = Histogram(
            "hybridcache_wrapper_fetch_seconds",
            "Wrapper HTTP calls, by what was fetched and outcome.",
            ["what", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.event_lag_seconds = Histogram(
            "hybridcache_event_lag_seconds",
            "From a change notification's publish time to its effect applied.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0),
            registry=r,
        )
        self.rate_limited = Counter(
            "hybridcache_rate_limited", "Calls refused by a caller's rate limit or concurrency cap.",
            ["limit"], registry=r,
        )  # fmt: skip
        self.lane_refused = Counter(
            "hybridcache_lane_refused", "Calls refused because their lane (unary, stream, ...) was full.",
            ["lane"], registry=r,
        )  # fmt: skip
        self.request_message_timeouts = Counter(
            "hybridcache_request_message_timeouts",
            "Calls cancelled because their request message did not arrive in time.",
            registry=r,
        )
        # Request bodies that are not the method's message (api/registration.py): INVALID_ARGUMENT.
        self.malformed_requests = Counter(
            "hybridcache_malformed_requests", "Request bodies that were not the method's message.",
            ["grpc_method"], registry=r,
        )  # fmt: skip

    def rpc_series(self, method: str, grpc_type: str) -> RpcSeries:
        return RpcSeries(self, method, grpc_type)

    def observe_fetch(self, what: str, seconds: float, ok: bool) -> None:
        self.wrapper_fetch_seconds.labels(what, "ok" if ok else "error").observe(seconds)

    def add_collector(self, collect: Callable[[], Iterator[Any]]) -> None:
        """Register a scrape-time collector (a function yielding metric families)."""
        self.registry.register(_FunctionCollector(collect))

    def serve(self, port: int, host: str = "0.0.0.0", tls: MetricsTLS | None = None) -> None:
        """Serve /metrics; over HTTPS when `tls` is given (the gRPC port's certificate)."""
        if tls is None:
            start_http_server(port, addr=host, registry=self.registry)
            return
        start_http_server(
            port,
            addr=host,
            registry=self.registry,
            certfile=tls.cert_file,
            keyfile=tls.key_file,
            client_cafile=tls.client_ca_file or None,
            client_auth_required=bool(tls.client_ca_file),
        )


@dataclass(frozen=True, slots=True)
class MetricsTLS:
    cert_file: str
    key_file: str
    client_ca_file: str = ""  # set: scrapers must present a certificate this CA signed


class RpcSeries:
    """One method's RPC series, labelled once for every call of it.

    `.labels()` costs ~1.3 µs (it builds, validates and looks up the label tuple under a lock),
    three per RPC in the gate; a labelled child is the same object for the metric's lifetime,
    so holding it gives the same series at ~0.5 µs an increment. A status code's child is
    created on its first use, so a series appears only once a call ended with that code, as
    before.
    """

    __slots__ = ("_handled", "_handled_by_code", "method", "seconds", "started")

    def __init__(self, metrics: Metrics, method: str, grpc_type: str) -> None:
        self.method = method
        self._handled = metrics.rpc_handled
        self._handled_by_code: dict[str, Any] = {}
        self.started = metrics.rpc_started.labels(method, grpc_type)
        self.seconds = metrics.rpc_seconds.labels(method)

    def handled(self, code: str) -> Any:
        child = self._handled_by_code.get(code)
        if child is None:
            # Racing threads get the same child: `.labels()` is idempotent and thread-safe.
            child = self._handled_by_code[code] = self._handled.labels(self.method, code)
        return child


class _FunctionCollector(Collector):
    def __init__(self, collect: Callable[[], Iterator[Any]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Any]:
        yield from self._collect()


def counter(name: str, documentation: str, labels: list[str], rows: Sequence[tuple[list[str], float]]) -> Any:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for values, value in rows:
        family.add_metric(values, value)
    return family


def gauge(name: str, documentation: str, labels: list[str], rows: Sequence[tuple[list[str], float]]) -> Any:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for values, value in rows:
        family.add_metric(values, value)
    return family
