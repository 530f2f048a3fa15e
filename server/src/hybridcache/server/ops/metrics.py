"""Prometheus metrics, on a registry of the service's own, served on their own port.

Hot-path counters the core already keeps (hits, misses, stale per kind; subscriber counts)
are NOT counted twice: a collector reads them at scrape time, so a cache hit pays nothing
for metrics; state such as freshness is read so too (ops/telemetry.py). What is declared
here is updated where it happens (tests/unit/test_metrics_coverage.py holds both to that).
Labels are low-cardinality only: method, code, kind, result, reason, tenant (tenants are
few and configured; user ids, keys and callers' tokens never become labels).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# The `le` label values, written as prometheus_client's Histogram writes them.
_float_label = cast("Callable[[float], str]", floatToGoString)
_LATENCY_LABELS = tuple(_float_label(b) for b in _LATENCY_BUCKETS)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The three gRPC series are kept by `RpcSeries` and read at scrape time (`_rpc_families`).
        self._rpc_series: list[RpcSeries] = []
        self._rpc_lock = threading.Lock()
        r.register(_FunctionCollector(self._rpc_families))
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
        """The series of one method; the same object for every call of the same method."""
        with self._rpc_lock:
            for series in self._rpc_series:
                if series.method == method and series.grpc_type == grpc_type:
                    return series
            series = RpcSeries(method, grpc_type)
            self._rpc_series.append(series)
            return series

    def _rpc_families(self) -> Iterator[Any]:
        with self._rpc_lock:
            every = list(self._rpc_series)
        started = CounterMetricFamily(
            "grpc_server_started", "RPCs started.", labels=["grpc_method", "grpc_type"]
        )
        handled = CounterMetricFamily(
            "grpc_server_handled", "RPCs completed, by status code.", labels=["grpc_method", "grpc_code"]
        )
        seconds = HistogramMetricFamily(
            "grpc_server_handling_seconds", "Time to handle an RPC.", labels=["grpc_method"]
        )
        for series in every:
            view = series.read()
            started.add_metric([series.method, series.grpc_type], view.started)
            for code, count in sorted(view.handled.items()):
                handled.add_metric([series.method, code], count)
            cumulative, buckets = 0, []
            for bound, count in zip((*_LATENCY_LABELS, "+Inf"), view.buckets, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            seconds.add_metric([series.method], buckets, view.seconds_sum)
        yield from (started, handled, seconds)

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


@dataclass(frozen=True, slots=True)
class RpcCounts:
    started: int
    handled: dict[str, int]
    buckets: tuple[int, ...]  # per bucket of _LATENCY_BUCKETS, then +Inf; not cumulative
    seconds_sum: float


class RpcSeries:
    """One method's grpc_server_{started,handled,handling_seconds} series, kept as plain numbers.

    The gate updates them twice per RPC (`start`, `end`). prometheus_client's labelled
    children cost five locked increments per RPC (started, handled, the histogram's sum and
    bucket and its count) and a Python loop over the buckets; here it is one lock and a
    bisect, and the families are built at scrape time (`Metrics._rpc_families`), with the
    same names, labels and buckets. A status code's series appears once a call ended with it.
    """

    __slots__ = ("_buckets", "_handled", "_lock", "_started", "_sum", "grpc_type", "method")

    def __init__(self, method: str, grpc_type: str) -> None:
        self.method = method
        self.grpc_type = grpc_type
        self._lock = threading.Lock()
        self._started = 0
        self._handled: dict[str, int] = {}
        self._buckets = [0] * (len(_LATENCY_BUCKETS) + 1)
        self._sum = 0.0

    def start(self) -> None:
        with self._lock:
            self._started += 1

    def end(self, code: str, seconds: float) -> None:
        # bisect_left: the first bound >= seconds, i.e. the bucket `le` it falls in (+Inf last).
        bucket = bisect_left(_LATENCY_BUCKETS, seconds)
        with self._lock:
            self._handled[code] = self._handled.get(code, 0) + 1
            self._buckets[bucket] += 1
            self._sum += seconds

    def read(self) -> RpcCounts:
        with self._lock:
            return RpcCounts(self._started, dict(self._handled), tuple(self._buckets), self._sum)


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
