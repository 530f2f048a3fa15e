"""The gate every HybridCache RPC passes: who is calling, may they call now, and a record of it.

A server interceptor, so the servicer sees only authenticated, admitted calls:

    authenticate (UNAUTHENTICATED) -> rate limit / in-flight cap per caller (RESOURCE_EXHAUSTED
    + RetryInfo) -> handler -> metrics (started / handled by code / seconds) + one log line
    (caller, method, code, duration; never request fields)

Health and reflection are not gated: probes and grpcurl must work without credentials.
Limits are per caller, so one caller exhausting its budget never refuses another's calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from hybridcache.server.auth import Authenticator, Caller
from hybridcache.server.errors import abort
from hybridcache.server.logs import log_rpc
from hybridcache.server.metrics import Metrics, RpcSeries

_current = threading.local()  # the sync server runs a call's handler on one pool thread


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


class Gate(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        auth: Authenticator,
        metrics: Metrics,
        *,
        limits_for: Callable[[Caller], CallerLimits],
        service_prefix: str | tuple[str, ...],  # several: each service gated alike
        log_rpcs: bool = True,
    ) -> None:
        self._auth = auth
        self._metrics = metrics
        self._limits_for = limits_for
        names = (service_prefix,) if isinstance(service_prefix, str) else service_prefix
        self._prefixes = tuple(f"/{name}/" for name in names)
        self._log_rpcs = log_rpcs
        self._lock = threading.Lock()
        self._budgets: dict[str, _Budget] = {}
        # Full method name -> (the service's handler, the gated handler built for it).
        self._gated: dict[str, tuple[Any, Any]] = {}

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        # The sync server asks on every call. A method's gated handler (and its labelled
        # metrics) is built once, reused while the service hands out the same handler.
        handler = continuation(details)
        if handler is None:
            return None
        gated = self._gated.get(details.method)
        if gated is not None and gated[0] is handler:
            return gated[1]
        if not details.method.startswith(self._prefixes):
            return handler
        wrapped = self._wrap(handler, details.method.rsplit("/", 1)[-1])
        self._gated[details.method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: Any, method: str) -> Any:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, self._metrics.rpc_series(method, "unary")),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, self._metrics.rpc_series(method, "server_stream")),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    # --- admission

    def _admit(self, context: grpc.ServicerContext, metadata: Any, *, counts_in_flight: bool) -> Caller:
        caller = self._auth.identify(metadata)
        if caller is None:
            reason = "MISSING_CREDENTIALS" if not metadata_has_token(metadata) else "INVALID_CREDENTIALS"
            abort(context, grpc.StatusCode.UNAUTHENTICATED, "missing or unknown bearer token", reason)
        limits = self._limits_for(caller)
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
                if limits.max_in_flight and budget.in_flight >= limits.max_in_flight:
                    refused = "in-flight"
                    retry_after = 0.05
                else:
                    budget.in_flight += 1
        if refused:
            self._metrics.rate_limited.labels(refused).inc()
            message = (
                f"caller {caller.name!r} exceeded its rate limit"
                if refused == "rate"
                else f"caller {caller.name!r} has too many calls in flight"
            )
            abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                message,
                "RATE_LIMITED" if refused == "rate" else "TOO_MANY_IN_FLIGHT",
                retry_after_s=retry_after,
            )
        _current.caller = caller
        return caller

    def _release(self, caller: Caller) -> None:
        with self._lock:
            self._budgets[caller.name].in_flight -= 1

    # --- wrappers

    def _unary(self, inner: Callable[[Any, Any], Any], series: RpcSeries) -> Callable[[Any, Any], Any]:
        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            series.started.inc()
            caller: Caller | None = None
            code = "OK"
            try:
                caller = self._admit(context, context.invocation_metadata(), counts_in_flight=True)
                return inner(request, context)
            except Exception:
                code = _code_name(context)
                raise
            finally:
                if caller is not None:
                    self._release(caller)
                self._done(series, caller, code, started)

        return behavior

    def _stream(
        self, inner: Callable[[Any, Any], Iterator[Any]], series: RpcSeries
    ) -> Callable[[Any, Any], Iterator[Any]]:
        def behavior(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            series.started.inc()
            caller: Caller | None = None
            code = "OK"
            try:
                # Streams are capped by the stream limiter, not the unary in-flight cap.
                caller = self._admit(context, context.invocation_metadata(), counts_in_flight=False)
                yield from inner(request, context)
                if not context.is_active():  # the handler ended because the client went away
                    code = "CANCELLED"
            except Exception:
                code = _code_name(context)
                raise
            except GeneratorExit:
                code = "CANCELLED"
                raise
            finally:
                self._done(series, caller, code, started)

        return behavior

    def _done(self, series: RpcSeries, caller: Caller | None, code: str, started: float) -> None:
        seconds = time.perf_counter() - started
        series.handled(code).inc()
        series.seconds.observe(seconds)
        if self._log_rpcs:
            log_rpc(caller.name if caller else "-", series.method, code, round(seconds * 1000, 3))


def _code_name(context: grpc.ServicerContext) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def metadata_has_token(metadata: Any) -> bool:
    return any(key == "authorization" for key, _ in metadata or ())
