"""Tracing on: the server span per RPC, Wrapper spans, span events for cache outcomes.

    caller (traceparent in metadata) ──► ServerSpans: span "<service>/<Method>" (SERVER)
        gate, servicer ─► TracedCache: events cache.hit | cache.miss | cache.stale |
                                      cache.singleflight_wait; hybridcache.tenant_id
            core ─► TracedSource: span "hybridcache.snapshot_load" | "hybridcache.fetch_item"
                        WrapperClient's urllib3 pool (official urllib3 instrumentation):
                        span "GET <route>" (CLIENT), traceparent sent on to the Wrapper

Attributes are an allowlist (`SPAN_ATTRIBUTES`, `EVENT_ATTRIBUTES`): the tenant id, kinds,
counts, durations and codes; never a key (user ids, operation codes), a profile field, a
token or a header. The HTTP span's URL is rewritten to its route with the tenant only
(`route_of`), since the path holds user ids.

The urllib3 instrumentation has no per-pool API (httpx's had `instrument_client`): it wraps
`HTTPConnectionPool.urlopen` for the whole process, once, with one tracer provider. So it is
installed once (`_instrument_urllib3`) with a provider of our own (`_PoolTracerProvider`)
whose tracer starts a real span only inside a call of a pool that an `OtelTracing` instrumented
(a context variable set around that pool's `urlopen`), from that `OtelTracing`'s provider;
every other urllib3 call in the process gets the non-recording span (no span, no
traceparent: as without instrumentation), and each Service keeps its own provider.

Why our own server interceptor rather than opentelemetry-instrumentation-grpc's: every error
here ends with `context.abort_with_status` (ErrorInfo details), which that interceptor does
not see: tried on this server, a NOT_FOUND call's span said rpc.grpc.status_code 0, status
UNSET (this one: 5). It also builds a new handler per call and records the caller's address.
Their cost per traced hit was alike (one run, synchronous export, loaded host: 990-1,336 µs
official, 756-1,147 µs this one; noise swamps the difference). This one is ~60 lines with the
same span name, kind and rpc.* attributes, and builds each method's traced handler once.

How a read's outcome is known without touching the cache core (which stays free of I/O and
of this concern): the core says where a value came from (`Read.source`), and `TracedSource`
counts, per thread, the Wrapper calls the read made. A value from the Wrapper that this
thread did not fetch was another call's single-flight fetch; so was a first read of a tenant
whose replica another call was loading.
"""

from __future__ import annotations

import contextvars
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.urllib3 import RequestInfo, URLLib3Instrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from hybridcache.server.core import HybridCache
from hybridcache.server.core.errors import CacheError, NotFound
from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.permissions import PermissionDecision
from hybridcache.server.core.results import Read, Source
from hybridcache.server.core.source import Snapshot, WrapperSource
from hybridcache.server.ops import logs
from hybridcache.server.ops.tracing import Tracing
from hybridcache.server.wrapper.client import WrapperClient

TRACER_NAME = "hybridcache.server"

# Every attribute our spans and events may carry (tests hold the exported spans to it). The
# urllib3 span adds the HTTP semantic-convention ones (method, status, server address, route).
SPAN_ATTRIBUTES = frozenset(
    {
        "rpc.system",
        "rpc.service",
        "rpc.method",
        "rpc.grpc.status_code",
        "hybridcache.tenant_id",
        "hybridcache.kind",
        "hybridcache.items",
        "hybridcache.revision",
        "hybridcache.found",
    }
)
EVENT_ATTRIBUTES = frozenset(
    {
        "hybridcache.kind",
        "hybridcache.keys",
        "hybridcache.age_ms",
        "hybridcache.read_ms",
        "hybridcache.reason",
    }
)

# Server-side codes that mean the service failed (OpenTelemetry's gRPC conventions); the rest
# (NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED, ...) are answers, not errors of the span.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_UNTRACED_SERVICES = ("/grpc.health.v1.Health/",)  # probes every few seconds: noise

# The literal segments of the Wrapper's API paths; any other segment (after the tenant's) is
# an id and becomes "{key}" in the span.
_ROUTE_WORDS = frozenset(
    {"api", "tenants", "snapshots", "credit-costs", "roles", "users", "status", "profile", "feature-flags",
     "org-units", *(kind.value for kind in Kind)}
)  # fmt: skip


def provider_from_environment(exporters: Sequence[str]) -> TracerProvider:
    """An SDK provider as the OTEL_* variables describe it (service name "hybridcache" unless
    OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say otherwise); spans batched to each exporter."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "hybridcache"}))
    provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER (SDK)
    for name in exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    return provider


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (otlp, console or none)")
    # OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL as the SDK reads it: grpc by default, or http/protobuf.
    import os  # noqa: PLC0415

    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    )
    if protocol.strip() == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

        return OTLPSpanExporter()
    if protocol.strip() != "grpc":
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not grpc or http/protobuf")
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter as GrpcExporter,
    )

    return GrpcExporter()


class OtelTracing(Tracing):
    enabled = True

    def __init__(self, provider: trace.TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer(TRACER_NAME)
        self._fetches = _FetchCount()
        logs.set_trace_id_source(current_trace_id)

    def interceptors(self) -> Sequence[grpc.ServerInterceptor]:
        return (ServerSpans(self._tracer),)

    def instrument_wrapper(self, wrapper: WrapperClient) -> WrapperSource:
        _instrument_urllib3()
        pool = wrapper.pool
        urlopen = pool.urlopen
        tracer = self.provider.get_tracer("opentelemetry.instrumentation.urllib3")

        @functools.wraps(urlopen)
        def traced_urlopen(*args: Any, **kwargs: Any) -> Any:
            token = _POOL_TRACER.set(tracer)
            try:
                return urlopen(*args, **kwargs)
            finally:
                _POOL_TRACER.reset(token)

        pool.urlopen = traced_urlopen  # type: ignore[method-assign]  # this pool only
        return TracedSource(wrapper, self._tracer, self._fetches)

    def traced_cache(self, cache: HybridCache) -> Any:
        return TracedCache(cache, self._fetches)

    def shutdown(self) -> None:
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


def current_trace_id() -> str:
    """The current span's trace id (32 hex digits), "" when there is none."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


# --- the server span


class ServerSpans(grpc.ServerInterceptor):
    """One SERVER span per RPC, its parent the W3C trace context of the caller's metadata.
    Placed before the gate, so refused calls are traced too and the gate's log line sees the span."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._traced: dict[str, tuple[Any, Any]] = {}  # method -> (handler, traced handler)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        method: str = details.method
        if handler is None or method.startswith(_UNTRACED_SERVICES):
            return handler
        traced = self._traced.get(method)
        if traced is not None and traced[0] is handler:
            return traced[1]
        service, _, name = method.lstrip("/").partition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        span_name = method.lstrip("/")
        # Any of the four shapes: the gate re-shapes admitted calls (unary -> stream-unary,
        # server-streaming -> stream-stream) so that it, not grpc, waits for the request.
        if handler.response_streaming:
            behavior = handler.stream_stream if handler.request_streaming else handler.unary_stream
            factory = (
                grpc.stream_stream_rpc_method_handler
                if handler.request_streaming
                else grpc.unary_stream_rpc_method_handler
            )
            traced_behavior = self._stream(behavior, span_name, attributes)
        else:
            behavior = handler.stream_unary if handler.request_streaming else handler.unary_unary
            factory = (
                grpc.stream_unary_rpc_method_handler
                if handler.request_streaming
                else grpc.unary_unary_rpc_method_handler
            )
            traced_behavior = self._unary(behavior, span_name, attributes)
        if behavior is None:
            return handler
        wrapped = factory(
            _same_pool(traced_behavior, behavior),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._traced[method] = (handler, wrapped)
        return wrapped

    def _start(self, name: str, attributes: dict[str, str], context: grpc.ServicerContext) -> Any:
        parent = propagate.extract(dict(context.invocation_metadata()))
        return self._tracer.start_as_current_span(
            name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,  # exception texts are ours to vet: the status code says enough
            set_status_on_exception=False,
        )

    def _unary(self, inner: Callable[[Any, Any], Any], name: str, attributes: dict[str, str]) -> Any:
        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            with self._start(name, attributes, context) as span:
                try:
                    response = inner(request, context)
                except BaseException:
                    _end(span, _code_of(context) or grpc.StatusCode.UNKNOWN)
                    raise
                _end(span, _code_of(context) or grpc.StatusCode.OK)
                return response

        return behavior

    def _stream(
        self, inner: Callable[[Any, Any], Iterator[Any]], name: str, attributes: dict[str, str]
    ) -> Any:
        def behavior(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with self._start(name, attributes, context) as span:
                try:
                    yield from inner(request, context)
                except GeneratorExit:
                    _end(span, grpc.StatusCode.CANCELLED)
                    raise
                except BaseException:
                    _end(span, _code_of(context) or grpc.StatusCode.UNKNOWN)
                    raise
                # A stream the caller cancelled ends quietly (the handler sees it inactive and returns).
                ended = grpc.StatusCode.OK if context.is_active() else grpc.StatusCode.CANCELLED
                _end(span, _code_of(context) or ended)

        return behavior


def _same_pool(wrapper: Any, behavior: Any) -> Any:
    """The gate marks each behaviour with the pool (lane) grpc must run it on: keep the mark."""
    pool = getattr(behavior, "experimental_thread_pool", None)
    if pool is not None:
        wrapper.experimental_thread_pool = pool
    return wrapper


def _end(span: trace.Span, code: grpc.StatusCode) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, code.name))


# --- Wrapper spans


def route_of(path: str) -> str:
    """A Wrapper path with every id but the tenant's replaced: /api/tenants/acme/users/{key}/profile."""
    segments = path.split("?", 1)[0].split("/")
    return "/".join(
        segment if index == 3 or segment in _ROUTE_WORDS or not segment else "{key}"
        for index, segment in enumerate(segments)
    )


def _route_url(url: str) -> str:
    """The URL the span records (url.full / http.url): origin and route, no ids, no query."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}{sep}{host}" + route_of(slash + path)


def _route_only(span: trace.Span, pool: Any, request: RequestInfo) -> None:
    """The span's name and route (its URL is `_route_url`'s already)."""
    route = "/" + request.url.partition("://")[2].partition("/")[2]  # (url: `_route_url`'s)
    for key in ("url.full", "http.url"):
        span.set_attribute(key, request.url)
    span.set_attribute("http.route", route)
    span.update_name(f"GET {route}")


# The tracer of the pool whose urlopen is running on this thread (None: not one of ours).
_POOL_TRACER: contextvars.ContextVar[trace.Tracer | None] = contextvars.ContextVar(
    "hybridcache_pool_tracer", default=None
)
_NO_SPANS = trace.NoOpTracer()
_instrumented = threading.Lock()


class _PoolTracer(trace.Tracer):
    """Hands each span to the current pool's tracer, or to none."""

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return (_POOL_TRACER.get() or _NO_SPANS).start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return (_POOL_TRACER.get() or _NO_SPANS).start_as_current_span(*args, **kwargs)


class _PoolTracerProvider(trace.TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _PoolTracer()


def _instrument_urllib3() -> None:
    """The process-wide urllib3 instrumentation, once (it is a singleton)."""
    with _instrumented:
        instrumentor = URLLib3Instrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(
                tracer_provider=_PoolTracerProvider(), url_filter=_route_url, request_hook=_route_only
            )


class _FetchCount(threading.local):
    """Wrapper calls made on this thread (a gRPC call runs on one pool thread)."""

    count = 0


class TracedSource:
    """The core's WrapperSource with a span around each item fetch and snapshot load."""

    def __init__(self, inner: WrapperClient, tracer: trace.Tracer, fetches: _FetchCount) -> None:
        self._inner = inner
        self._tracer = tracer
        self._fetches = fetches

    def _span(self, name: str, tenant_id: str, kind: Kind) -> Any:
        self._fetches.count += 1
        return self._tracer.start_as_current_span(
            name,
            attributes={"hybridcache.tenant_id": tenant_id, "hybridcache.kind": str(kind)},
            record_exception=False,
            set_status_on_exception=False,
        )

    def fetch_item(self, tenant_id: str, kind: Kind, key: str, deadline: float | None) -> Any:
        with self._span("hybridcache.fetch_item", tenant_id, kind) as span:
            try:
                value = self._inner.fetch_item(tenant_id, kind, key, deadline)
            except NotFound:
                span.set_attribute("hybridcache.found", False)
                raise
            except CacheError as exc:
                span.set_status(Status(StatusCode.ERROR, exc.reason))
                raise
            span.set_attribute("hybridcache.found", True)
            return value

    def fetch_snapshot(self, tenant_id: str, kind: Kind, deadline: float | None) -> Snapshot:
        with self._span("hybridcache.snapshot_load", tenant_id, kind) as span:
            try:
                snapshot = self._inner.fetch_snapshot(tenant_id, kind, deadline)
            except CacheError as exc:
                span.set_status(Status(StatusCode.ERROR, exc.reason))
                raise
            span.set_attribute("hybridcache.items", len(snapshot.items))
            span.set_attribute("hybridcache.revision", snapshot.revision)
            return snapshot


# --- cache outcomes as span events


class TracedCache:
    """The servicer's view of the cache: the same calls, each recording its outcome as an event
    on the current span (and the tenant id on it). Everything else passes straight through."""

    def __init__(self, inner: HybridCache, fetches: _FetchCount) -> None:
        self._inner = inner
        self._fetches = fetches

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _before(self, tenant_id: str) -> tuple[trace.Span, int, bool, float]:
        span = trace.get_current_span()
        span.set_attribute("hybridcache.tenant_id", tenant_id)
        return span, self._fetches.count, self._inner.is_loaded(tenant_id), time.perf_counter()

    def _outcome(
        self, tenant_id: str, fetched_before: int, loaded_before: bool, source: Source | None
    ) -> str:
        if source is Source.STALE:
            return "cache.stale"
        if self._fetches.count != fetched_before:
            return "cache.miss"
        if source is Source.WRAPPER or (not loaded_before and self._inner.is_loaded(tenant_id)):
            return "cache.singleflight_wait"  # another call's fetch, or the replica load it waited on
        return "cache.hit"

    def get(self, tenant_id: str, kind: Kind, key: str, deadline: float | None = None) -> Read:
        span, fetched, loaded, started = self._before(tenant_id)
        if not span.is_recording():
            return self._inner.get(tenant_id, kind, key, deadline)
        try:
            read = self._inner.get(tenant_id, kind, key, deadline)
        except CacheError as exc:
            self._event(
                span, self._outcome(tenant_id, fetched, loaded, None), kind, started, reason=exc.reason
            )
            raise
        self._event(
            span, self._outcome(tenant_id, fetched, loaded, read.source), kind, started, age_s=read.age_s
        )
        return read

    def get_many(
        self, tenant_id: str, kind: Kind, keys: Sequence[str], deadline: float | None = None
    ) -> tuple[dict[str, Read], list[str]]:
        span, fetched, loaded, started = self._before(tenant_id)
        if not span.is_recording():
            return self._inner.get_many(tenant_id, kind, keys, deadline)
        try:
            found, missing = self._inner.get_many(tenant_id, kind, keys, deadline)
        except CacheError as exc:
            self._event(
                span, self._outcome(tenant_id, fetched, loaded, None), kind, started, reason=exc.reason
            )
            raise
        stale = sum(1 for read in found.values() if read.source is Source.STALE)
        if stale:
            self._event(span, "cache.stale", kind, started, keys=stale)
        outcome = self._outcome(tenant_id, fetched, loaded, None)
        self._event(span, outcome, kind, started, keys=len(keys) - stale)
        return found, missing

    def check_permission(
        self, tenant_id: str, user_id: str, permission: str, deadline: float | None = None
    ) -> PermissionDecision:
        span, fetched, loaded, started = self._before(tenant_id)
        if not span.is_recording():
            return self._inner.check_permission(tenant_id, user_id, permission, deadline)
        try:
            decision = self._inner.check_permission(tenant_id, user_id, permission, deadline)
        except CacheError as exc:
            self._event(
                span,
                self._outcome(tenant_id, fetched, loaded, None),
                Kind.USER_STATUS,
                started,
                reason=exc.reason,
            )
            raise
        self._event(span, self._outcome(tenant_id, fetched, loaded, None), Kind.USER_STATUS, started)
        return decision

    @staticmethod
    def _event(
        span: trace.Span,
        name: str,
        kind: Kind,
        started: float,
        *,
        age_s: float | None = None,
        keys: int | None = None,
        reason: str | None = None,
    ) -> None:
        attributes: dict[str, str | int | float] = {
            "hybridcache.kind": str(kind),
            "hybridcache.read_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        if age_s is not None:
            attributes["hybridcache.age_ms"] = round(age_s * 1000, 1)
        if keys is not None:
            attributes["hybridcache.keys"] = keys
        if reason is not None:
            attributes["hybridcache.reason"] = reason
        span.add_event(name, attributes)


def _code_of(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    code: grpc.StatusCode | None = context.code()  # type: ignore[attr-defined]  # grpc has it (1.38+); types-grpcio lacks it
    return code
