"""What tracing costs a cache hit (GetCreditCost), tracing off and on, interleaved rounds, with
Redis and the development Wrapper behind a real service:

  default   the RPC's handler called in-process as the gRPC server calls it on every call
            (the interceptors' intercept_service, then the traced + gated handler), with the
            per-RPC log line rendered to /dev/null: microseconds of server CPU per hit;
  --grpc    round trips over a real channel (adds the network stack and gRPC's own cost).

    .venv/bin/python scripts/measure_tracing.py [--grpc] [--calls N] [--rounds R] [--off-only]

--off-only runs the server without the tracing parameter, so the same script measures a tree
from before tracing existed (PYTHONPATH=<that tree>/server/src:<that tree>/client/src).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, NamedTuple

import grpc

from hybridcache.server.api.registration import SERVICE_NAME, _TableCapture
from hybridcache.server.app import create_service
from hybridcache.server.config import Settings
from hybridcache.server.ops import logs
from hybridcache.server.ops.logs import configure_logging
from hybridcache.server.ops.readiness import wait_serving
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.stack.redis_process import RedisProcess
from hybridcache_dev.wrapper import launch


def settings(wrapper_url: str, redis_url: str) -> Settings:
    return Settings.model_validate(
        {
            "host": "127.0.0.1",
            "port": 0,
            "wrapper_url": wrapper_url,
            "wrapper_token": "t",
            "redis_url": redis_url,
            "insecure_dev_mode": True,
            "tenants": ["acme"],
            "log_rpcs": True,
            "drain_s": 0.0,
        }
    )


def timed(stub: pb_grpc.HybridCacheStub, calls: int) -> list[float]:
    request = pb.GetCreditCostRequest(tenant_id="acme", operation_code="crm.leads.create")
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        stub.GetCreditCost(request, timeout=5)
        out.append((time.perf_counter() - started) * 1e6)
    return out


class _Metadatum(NamedTuple):  # as grpc hands metadata to handlers
    key: str
    value: str


class _Context:
    """What the gate, the tracing interceptor and the servicer ask of a ServicerContext."""

    def invocation_metadata(self) -> tuple[_Metadatum, ...]:
        return (_Metadatum("user-agent", "grpc-python/1.85"),)

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def time_remaining(self) -> float:
        return 5.0

    def code(self) -> None:
        return None


def handler_of(service: Any) -> Callable[[], Any]:
    """One GetCreditCost call as the server makes it: intercept_service down the chain, then
    the resulting handler's behaviour."""
    capture = _TableCapture(SERVICE_NAME)
    pb_grpc.add_HybridCacheServicer_to_server(service.servicer, capture)  # type: ignore[arg-type]  # captures the table
    base = capture.handlers["GetCreditCost"]
    tracing = getattr(service, "tracing", None)
    interceptors = [*(tracing.interceptors() if tracing is not None else ()), service._gate(())]
    details = SimpleNamespace(method=f"/{SERVICE_NAME}/GetCreditCost", invocation_metadata=())

    def continuation_for(index: int) -> Callable[[Any], Any]:
        if index == len(interceptors):
            return lambda _details: base
        return lambda d: interceptors[index].intercept_service(continuation_for(index + 1), d)

    top = continuation_for(0)
    request = pb.GetCreditCostRequest(tenant_id="acme", operation_code="crm.leads.create")
    context = _Context()

    def call() -> Any:
        handler = top(details)
        if handler.unary_unary is not None:
            return handler.unary_unary(request, context)
        return handler.stream_unary(iter((request,)), context)  # the gate re-shapes admitted calls

    return call


def timed_handler(call: Callable[[], Any], calls: int) -> list[float]:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return [(time.perf_counter() - started) * 1e6 / calls]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--off-only", action="store_true")
    parser.add_argument("--grpc", action="store_true")
    args = parser.parse_args()
    configure_logging("json", "warning" if args.grpc else "info")
    handler = logs._json_handler
    assert handler is not None
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 (the process's lifetime)
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("hybridcache.rpc").setLevel(logging.WARNING if args.grpc else logging.INFO)
    with RedisProcess() as redis, launch(redis.url, token="t") as wrapper:  # noqa: S106
        services = {"off": create_service(settings(wrapper.url, redis.url))}
        if not args.off_only:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

            from hybridcache.server.ops.tracing.spans import OtelTracing

            provider = TracerProvider()
            exporter = InMemorySpanExporter()
            provider.add_span_processor(BatchSpanProcessor(exporter))
            services["on"] = create_service(settings(wrapper.url, redis.url), tracing=OtelTracing(provider))
        results: dict[str, list[float]] = {name: [] for name in services}
        runs: dict[str, Callable[[], list[float]]] = {}
        for name, service in services.items():
            wait_serving(f"127.0.0.1:{service.port}")
            if args.grpc:
                stub = pb_grpc.HybridCacheStub(grpc.insecure_channel(f"127.0.0.1:{service.port}"))
                runs[name] = functools.partial(timed, stub, args.calls)
            else:
                call = handler_of(service)
                runs[name] = functools.partial(timed_handler, call, args.calls)
            runs[name]()  # warm
        for _ in range(args.rounds):
            for name, run in runs.items():
                results[name] += run()
            if not args.off_only:
                exporter.clear()
        for name, values in results.items():
            values.sort()
            if args.grpc:
                p50, p99 = statistics.median(values), values[int(len(values) * 0.99)]
                print(f"tracing {name}: {len(values)} round trips, p50 {p50:.1f} us, p99 {p99:.1f} us")
            else:
                rounds = " ".join(f"{v:.2f}" for v in values)
                print(f"tracing {name}: us per call, {args.rounds} rounds of {args.calls}: {rounds}")
        for service in services.values():
            service.stop(0, drain_s=0)


if __name__ == "__main__":
    main()
