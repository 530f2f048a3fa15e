"""The gate every call passes: who is calling, may they call now, on whose threads, and a record.

A server interceptor. grpc's sync server runs `intercept_service` on its polling thread with
the call's metadata, before any pool thread is taken, so everything that can refuse a call
without its request message happens there, and a refused call never waits for one:

    polling thread:  authenticate (UNAUTHENTICATED) -> rate limit / in-flight cap per caller
                     (RESOURCE_EXHAUSTED + RetryInfo) -> a place in the call's lane
                     (capacity.py; RESOURCE_EXHAUSTED "SERVER_BUSY" when full)
    lane's thread:   client certificate bound to the caller? -> the request message, within
                     the request-message timeout (else cancelled) -> handler -> metrics
                     (started / handled by code / seconds) + one log line (caller, method,
                     code, duration; never request fields)

A refusal runs on the small refusal lane as a handler of a stream-request shape: grpc hands
such a handler its request iterator without waiting for a message, so it ends at once.
Admitted calls are re-shaped the same way (unary -> stream-unary, server-streaming ->
stream-stream) so that the gate, not grpc, waits for the message: it can time the wait out,
and its `finally` always runs to give back the caller's and the lane's places.

Health is never authenticated (probes must work without credentials) and runs on lanes of
its own. Reflection is authenticated in secure mode. Limits are per caller, so one caller
exhausting its budget never refuses another's calls.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from hybridcache.client.reasons import Reason
from hybridcache.server.api.auth import Authenticator, Caller
from hybridcache.server.api.capacity import Lane, Lanes, MessageWatch
from hybridcache.server.api.errors import abort
from hybridcache.server.api.reflection import V1 as REFLECTION_V1
from hybridcache.server.api.reflection import V1ALPHA as REFLECTION_V1ALPHA
from hybridcache.server.ops.logs import log_rpc
from hybridcache.server.ops.metrics import Metrics, RpcSeries

_current = threading.local()  # the sync server runs a call's handler on one pool thread

_HEALTH = "/" + health_pb2.DESCRIPTOR.services_by_name["Health"].full_name + "/"
# Both names reflection is served under (reflection.py): each is gated the same way.
_REFLECTION = (f"/{REFLECTION_V1}/", f"/{REFLECTION_V1ALPHA}/")
_HEALTH_MESSAGE_TIMEOUT_S = 1.0  # a probe sends its message with its headers; an idle one is not a probe
_BUSY_RETRY_S = 0.05


def current_caller() -> Caller:
    """The caller of the RPC running on this thread (set by the gate before the handler)."""
    caller: Caller = _current.caller
    return caller


@dataclass(frozen=True, slots=True)
class CallerLimits:
    rate_per_s: float  # 0: no rate limit
    burst: int
    max_in_flight: int  # 0: no cap


class _Budget:
    """Token bucket plus in-flight count of one caller. Guarded by the Gate's lock."""

    __slots__ = ("in_flight", "stamp", "tokens")

    def __init__(self, burst: int) -> None:
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.in_flight = 0


@dataclass(frozen=True, slots=True)
class _Refusal:
    reason: Reason  # its status code too
    message: str
    retry_after_s: float | None = None


class _Route:
    """How one method's calls are admitted and run; its handlers are built once per caller."""

    def __init__(
        self,
        gate: Gate,
        handler: Any,
        *,
        lane: Lane,
        authenticated: bool,
        timeout_s: float,
        series: RpcSeries | None,
    ) -> None:
        self.handler = handler
        self.lane = lane
        self.authenticated = authenticated
        self.counts_in_flight = authenticated and lane is gate.lanes.unary
        self.series = series
        self._gate = gate
        self._timeout_s = timeout_s
        self._by_caller: dict[str | None, Any] = {}

    def handler_for(self, caller: Caller | None) -> Any:
        # Keyed by name (a str caches its hash; a frozen dataclass's __hash__ is Python code).
        key = caller.name if caller is not None else None
        built = self._by_caller.get(key)
        if built is None:
            built = self._by_caller[key] = self._build(caller)
        return built

    def _build(self, caller: Caller | None) -> Any:
        h = self.handler
        wrap = _Behaviors(self, caller)
        if h.unary_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self.lane.on_pool(wrap.unary(h.unary_unary)), h.request_deserializer, h.response_serializer
            )
        if h.unary_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self.lane.on_pool(wrap.stream(h.unary_stream, whole=False)),
                h.request_deserializer,
                h.response_serializer,
            )
        if h.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self.lane.on_pool(wrap.stream(h.stream_stream, whole=True)),
                h.request_deserializer,
                h.response_serializer,
            )
        return grpc.stream_unary_rpc_method_handler(
            self.lane.on_pool(wrap.unary(h.stream_unary, whole=True)),
            h.request_deserializer,
            h.response_serializer,
        )

    # --- per call

    def enter(self, caller: Caller | None, context: grpc.ServicerContext) -> None:
        if self.series is not None:
            self.series.start()
        if caller is not None:
            _current.caller = caller
            if caller.tls_identity is not None:
                self._gate.check_certificate(caller, context)

    def first_message(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        request = self._gate.watch.first(requests, context, self._timeout_s)
        if request is None:
            abort(context, Reason.NO_REQUEST, "the call carried no request message")
        return request

    def messages(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        """The rest of a bidirectional stream's messages; one idle past the timeout is cancelled,
        so an idle stream does not keep its thread."""
        while (request := self._gate.watch.first(requests, context, self._timeout_s)) is not None:
            yield request

    def counted(self, caller: Caller | None) -> bool:
        """Whether this caller's calls here hold an in-flight place (its limits are configuration,
        so this is decided once per route and caller, not per call)."""
        return self.counts_in_flight and caller is not None and self._gate.limits(caller).max_in_flight > 0

    def leave(self, caller: Caller | None, code: str, started: float, counted: bool) -> None:
        if counted:
            assert caller is not None
            self._gate.release(caller)
        self.lane.release()
        if self.series is not None:
            self._gate.record(self.series, caller, code, started)


class _Behaviors:
    """The behaviours grpc calls for one route and caller (closures, so a call pays no lookups)."""

    __slots__ = ("_caller", "_route")

    def __init__(self, route: _Route, caller: Caller | None) -> None:
        self._route = route
        self._caller = caller

    def unary(self, inner: Callable[[Any, Any], Any], *, whole: bool = False) -> Callable[[Any, Any], Any]:
        route, caller = self._route, self._caller
        counted = route.counted(caller)

        def behavior(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "OK"
            try:
                route.enter(caller, context)
                if whole:
                    return inner(requests, context)
                return inner(route.first_message(requests, context), context)
            except Exception:
                code = _code_name(context)
                raise
            finally:
                route.leave(caller, code, started, counted)

        return behavior

    def stream(self, inner: Callable[[Any, Any], Iterator[Any]], *, whole: bool) -> Callable[[Any, Any], Any]:
        route, caller = self._route, self._caller
        counted = route.counted(caller)

        def behavior(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            code = "OK"
            try:
                route.enter(caller, context)
                first = route.first_message(requests, context)
                if whole:  # a bidirectional stream (reflection): each message within the timeout
                    yield from inner(itertools.chain((first,), route.messages(requests, context)), context)
                else:
                    yield from inner(first, context)
                if not context.is_active():  # the handler ended because the client went away
                    code = "CANCELLED"
            except Exception:
                code = _code_name(context)
                raise
            except GeneratorExit:
                code = "CANCELLED"
                raise
            finally:
                route.leave(caller, code, started, counted)

        return behavior


class Gate(grpc.ServerInterceptor):
    def __init__(
        self,
        auth: Authenticator,
        metrics: Metrics,
        *,
        limits_for: Callable[[Caller], CallerLimits],
        service_prefix: str | tuple[str, ...],  # several: each service gated alike
        lanes: Lanes,
        watch: MessageWatch,
        request_timeout_s: float = 5.0,
        authenticate_reflection: bool = True,
        log_rpcs: bool = True,
    ) -> None:
        self._auth = auth
        self._metrics = metrics
        self._limits_for = limits_for
        names = (service_prefix,) if isinstance(service_prefix, str) else service_prefix
        self._prefixes = tuple(f"/{name}/" for name in names)
        self.lanes = lanes
        self.watch = watch
        for lane in lanes.all():  # a series per lane from the start, so alerts see a 0, not nothing
            metrics.lane_refused.labels(lane.name)
        self._request_timeout_s = request_timeout_s
        self._authenticate_reflection = authenticate_reflection and not auth.insecure
        self._log_rpcs = log_rpcs
        self._lock = threading.Lock()
        self._budgets: dict[str, _Budget] = {}
        self._limits_by_caller: dict[str, CallerLimits] = {}
        # Full method name -> its route, rebuilt if the service hands out another handler.
        self._routes: dict[str, _Route | None] = {}

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        # On grpc's polling thread: cheap, never blocking, never raising.
        handler = continuation(details)
        if handler is None:
            return None
        route = self._routes.get(details.method)
        if route is None or route.handler is not handler:
            route = self._routes[details.method] = self._route(details.method, handler)
        if route is None:
            return handler
        caller: Caller | None = None
        if route.authenticated:
            caller = self._auth.identify(details.invocation_metadata)
            if caller is None:
                metadata = details.invocation_metadata
                reason = (
                    Reason.INVALID_CREDENTIALS if metadata_has_token(metadata) else Reason.MISSING_CREDENTIALS
                )
                return self._refuse(route, None, _Refusal(reason, "missing or unknown bearer token"))
            refusal = self._take_budget(caller, counts_in_flight=route.counts_in_flight)
            if refusal is not None:
                return self._refuse(route, caller, refusal)
        if not route.lane.try_admit():
            if route.counted(caller):
                assert caller is not None
                self.release(caller)
            self._metrics.lane_refused.labels(route.lane.name).inc()
            busy = _Refusal(
                Reason.SERVER_BUSY,
                f"server busy: too many {route.lane.name} calls in progress",
                _BUSY_RETRY_S,
            )
            return self._refuse(route, caller, busy)
        return route.handler_for(caller)

    def _route(self, method: str, handler: Any) -> _Route | None:
        lanes, streaming = self.lanes, handler.response_streaming
        if method.startswith(self._prefixes):
            name = method.rsplit("/", 1)[-1]
            series = self._metrics.rpc_series(name, "server_stream" if streaming else "unary")
            lane = lanes.stream if streaming else lanes.unary
            return _Route(
                self, handler, lane=lane, authenticated=True, timeout_s=self._request_timeout_s, series=series
            )
        if method.startswith(_REFLECTION):
            return _Route(
                self,
                handler,
                lane=lanes.reflection,
                authenticated=self._authenticate_reflection,
                timeout_s=self._request_timeout_s,
                series=None,
            )
        if method.startswith(_HEALTH):
            lane = lanes.health_watch if streaming else lanes.health
            timeout = min(_HEALTH_MESSAGE_TIMEOUT_S, self._request_timeout_s)
            return _Route(self, handler, lane=lane, authenticated=False, timeout_s=timeout, series=None)
        return None  # nothing else is registered; it would run on the server's default (refusal) pool

    # --- refusals (before any thread waits for a message)

    def _refuse(self, route: _Route, caller: Caller | None, refusal: _Refusal) -> Any:
        series = route.series

        def refuse(_requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            if series is not None:
                series.start()
            try:
                abort(context, refusal.reason, refusal.message, retry_after_s=refusal.retry_after_s)
            finally:
                if series is not None:
                    self.record(series, caller, refusal.reason.code.name, started)

        return grpc.stream_unary_rpc_method_handler(self.lanes.refusal.on_pool(refuse))

    # --- per-caller budgets

    def limits(self, caller: Caller) -> CallerLimits:
        # A caller's limits are configuration: looked up once, not built on every call.
        limits = self._limits_by_caller.get(caller.name)
        if limits is None:
            limits = self._limits_by_caller[caller.name] = self._limits_for(caller)
        return limits

    def _take_budget(self, caller: Caller, *, counts_in_flight: bool) -> _Refusal | None:
        limits = self.limits(caller)
        counts_in_flight = counts_in_flight and limits.max_in_flight > 0
        if limits.rate_per_s <= 0 and not counts_in_flight:
            return None  # nothing to count (the insecure dev caller by default): no lock
        retry_after = 0.0
        refused = ""
        with self._lock:
            budget = self._budgets.get(caller.name)
            if budget is None:
                budget = self._budgets[caller.name] = _Budget(limits.burst)
            if limits.rate_per_s > 0:
                now = time.monotonic()
                budget.tokens = min(limits.burst, budget.tokens + (now - budget.stamp) * limits.rate_per_s)
                budget.stamp = now
                if budget.tokens < 1.0:
                    refused = "rate"
                    retry_after = (1.0 - budget.tokens) / limits.rate_per_s
                else:
                    budget.tokens -= 1.0
            if not refused and counts_in_flight:
                if budget.in_flight >= limits.max_in_flight:
                    refused = "in-flight"
                    retry_after = _BUSY_RETRY_S
                else:
                    budget.in_flight += 1
        if not refused:
            return None
        self._metrics.rate_limited.labels(refused).inc()
        if refused == "rate":
            return _Refusal(
                Reason.RATE_LIMITED,
                f"caller {caller.name!r} exceeded its rate limit",
                retry_after,
            )
        return _Refusal(
            Reason.TOO_MANY_IN_FLIGHT,
            f"caller {caller.name!r} has too many calls in flight",
            retry_after,
        )

    def release(self, caller: Caller) -> None:
        """Give back an in-flight place `_take_budget` counted (only called when it did)."""
        with self._lock:
            self._budgets[caller.name].in_flight -= 1

    # --- on the lane's thread

    def check_certificate(self, caller: Caller, context: grpc.ServicerContext) -> None:
        """A caller bound to a client certificate must present that certificate (mTLS)."""
        identities = context.peer_identities() or ()
        assert caller.tls_identity is not None
        if caller.tls_identity.encode() not in identities:
            abort(
                context,
                Reason.CERTIFICATE_MISMATCH,
                f"caller {caller.name!r} must present its own client certificate",
            )

    def record(self, series: RpcSeries, caller: Caller | None, code: str, started: float) -> None:
        seconds = time.perf_counter() - started
        series.end(code, seconds)
        if self._log_rpcs:
            log_rpc(caller.name if caller else "-", series.method, code, round(seconds * 1000, 3))


def _code_name(context: grpc.ServicerContext) -> str:
    code = context.code()  # type: ignore[attr-defined]  # grpc has it (1.38+); types-grpcio lacks it
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return "UNKNOWN" if context.is_active() else "CANCELLED"


def metadata_has_token(metadata: Any) -> bool:
    return any(key == "authorization" for key, _ in metadata or ())
