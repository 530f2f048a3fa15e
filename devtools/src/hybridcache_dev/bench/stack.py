"""The real Service under test (spawned, pinned to core 0) against the private Redis and the
development Wrapper, and the few calls the benchmarks make to steer them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import grpc

from hybridcache_dev.bench.servers import BenchServer
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from hybridcache_dev.stack.redis_process import RedisProcess

TENANTS = tuple(f"tenant-{t:04d}" for t in range(1, 6))  # the Wrapper's scaled tenants (runner.WRAPPER_SCALE)
USERS = 4_000  # per tenant (runner.WRAPPER_SCALE)
OPERATIONS = 1_000


def operation_codes() -> list[str]:
    from hybridcache_dev.wrapper.seed import OPERATION_CODES  # noqa: PLC0415

    codes = list(OPERATION_CODES[:OPERATIONS])
    return codes + [f"bench.op{j:05d}.run" for j in range(len(codes) + 1, OPERATIONS + 1)]


def service_env(redis: RedisProcess, wrapper: Any, **overrides: str) -> dict[str, str]:
    env = {
        "HYBRIDCACHE_WRAPPER_URL": wrapper.url,
        "HYBRIDCACHE_WRAPPER_TOKEN": wrapper.token,
        "HYBRIDCACHE_TENANTS": ",".join(TENANTS),
        "HYBRIDCACHE_REDIS_URL": redis.url,
        "HYBRIDCACHE_INSECURE_DEV_MODE": "true",
        # One log line per RPC is an operator's choice; the figures are of the RPC path itself
        # (the service group measures the Service as shipped, log line on).
        "HYBRIDCACHE_LOG_RPCS": "false",
        "HYBRIDCACHE_LOG_LEVEL": "warning",
        "HYBRIDCACHE_LOG_FORMAT": "json",
        "HYBRIDCACHE_RESYNC_JITTER_S": "0",
        "HYBRIDCACHE_REFRESH_INTERVAL_S": "0",
        "HYBRIDCACHE_WATCH_HEARTBEAT_S": "0.5",  # the near-cache goes live on the first message
    }
    env.update({f"HYBRIDCACHE_{k.upper()}": v for k, v in overrides.items()})
    return env


def start_service(env: Mapping[str, str], *, ready_timeout_s: float = 120.0) -> BenchServer:
    """Start the Service and wait until its health is SERVING (the replicas are loaded)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415

    server = BenchServer("service", env)
    deadline = time.monotonic() + ready_timeout_s
    with grpc.insecure_channel(server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return server
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError("the Service did not become SERVING in time")
            time.sleep(0.05)  # polling a condition with a deadline


def set_wrapper_latency(wrapper: Any, latency_ms: int) -> None:
    with WrapperAdmin(wrapper.url, wrapper.token) as admin:
        if latency_ms:
            admin.set_faults(latencyMs=latency_ms)
        else:
            admin.clear_faults()


def wrapper_requests(wrapper: Any) -> dict[str, int]:
    """The Wrapper's /api request counts by route template (GET /admin/stats)."""
    with WrapperAdmin(wrapper.url, wrapper.token) as admin:
        body = admin.stats()
    return {str(k): int(v) for k, v in body["requests"].items()}


def reset_wrapper_stats(wrapper: Any) -> None:
    with WrapperAdmin(wrapper.url, wrapper.token) as admin:
        admin.reset_stats()


def call_each(target: str, method: str, requests: tuple[bytes, ...], *, timeout_s: float = 10.0) -> int:
    """Call `method` once with each request (to warm a cache); returns how many failed."""
    failed = 0
    with grpc.insecure_channel(target) as channel:
        stub: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        futures = []
        for request in requests:
            futures.append(stub.future(request, timeout=timeout_s))
            if len(futures) >= 32:  # a bounded window of calls in flight
                failed += sum(1 for f in futures if f.exception() is not None)
                futures.clear()
        failed += sum(1 for f in futures if f.exception() is not None)
    return failed
