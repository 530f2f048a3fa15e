"""The strategy table: full replication vs hybrid vs on-demand only, each a configuration of
the real Service (`HYBRIDCACHE_KIND_POLICIES`), on one workload (workload.py), with the
Wrapper at 5 ms and a steady stream of changes made through the Wrapper's admin API.

    full       the four critical kinds replicated (as hybrid) AND every user profile loaded
               up front and kept (TTL one day): the Wrapper has no snapshot of profiles or
               org units, so the core refuses `tier: replica` for them; preloading item by
               item is the closest the real service gets to replicating them
    hybrid     the defaults: critical kinds replicated, profiles on demand (TTL 5 min)
    on-demand  every kind `tier: on-demand` with a 1 ms TTL and no stale serving: every read
               goes to the Wrapper (a TTL of 0 is refused by the policy)

Measured per strategy: the Service's resident memory above an idle Service's (and entries
held), Wrapper HTTP bytes (a counting proxy) at start-up and during the workload, Redis bytes
sent during the workload (INFO total_net_output_bytes), read p50 / p99, Wrapper calls per
1,000 reads, and staleness: after each change, how long reads kept returning the old value.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import grpc
import httpx

from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache_dev.bench import cpus
from hybridcache_dev.bench.loadgen import Call
from hybridcache_dev.bench.proxy import CountingProxy
from hybridcache_dev.bench.stack import (
    TENANTS,
    USERS,
    call_each,
    service_env,
    set_wrapper_latency,
    start_service,
    wrapper_requests,
)
from hybridcache_dev.bench.stats import ratio
from hybridcache_dev.bench.suite import Bench, Group
from hybridcache_dev.bench.workload import METHODS, build
from hybridcache_dev.harness.percentiles import percentile
from hybridcache_dev.stack.redis_process import RedisProcess

WRAPPER_LATENCY_MS = 5
IN_FLIGHT = 8
CHANGE_INTERVAL_S = 0.5
STALE_BOUND_S = 3.0  # a change not visible after this long counts as "> 3 s"
_DAY = 86_400.0
_ON_DEMAND = {"tier": "on-demand", "ttl_s": 0.001, "adaptive_ttl": False, "ttl_min_s": 0.001}
_ON_DEMAND |= {"ttl_max_s": 0.001, "negative_ttl_s": 0.0, "max_stale_s": 0.0, "refresh_ahead": 0.0}
_KEEP = {"ttl_s": _DAY, "adaptive_ttl": False, "ttl_max_s": _DAY, "refresh_ahead": 0.0}
_ALL_KINDS = (
    "credit-costs",
    "role-permissions",
    "user-status",
    "feature-flags",
    "user-profiles",
    "org-units",
)
STRATEGIES: dict[str, dict[str, Any]] = {
    "on-demand": dict.fromkeys(_ALL_KINDS, _ON_DEMAND),
    "hybrid": {},
    "full": {"user-profiles": _KEEP, "org-units": _KEEP},
}


def _redis_out(redis: RedisProcess) -> int:
    client = redis.client()
    try:
        return int(client.info("stats")["total_net_output_bytes"])
    finally:
        client.close()


class _Prober(threading.Thread):
    """Changes one hot entity every CHANGE_INTERVAL_S through the Wrapper's admin API, then
    reads it through the Service until the new value shows: that wait is the staleness."""

    def __init__(self, target: str, wrapper: Any, stop_at: float) -> None:
        super().__init__(daemon=True, name="bench-prober")
        self._target, self._wrapper, self._stop_at = target, wrapper, stop_at
        self.staleness_s: list[float] = []
        self.not_seen = 0
        self.reads = 0

    def run(self) -> None:
        with (
            grpc.insecure_channel(self._target) as channel,
            httpx.Client(base_url=self._wrapper.url, headers=self._wrapper.headers) as http,
        ):
            cost = channel.unary_unary(
                METHODS[0], pb.GetCreditCostRequest.SerializeToString, pb.GetCreditCostResponse.FromString
            )
            profile = channel.unary_unary(
                METHODS[2], pb.GetUserProfileRequest.SerializeToString, pb.GetUserProfileResponse.FromString
            )
            turn = 0
            while time.monotonic() < self._stop_at:
                turn += 1
                tenant = TENANTS[turn % len(TENANTS)]
                if turn % 2:
                    value = f"{turn % 997 + 1}.{turn % 100:02d}"
                    http.put(f"/admin/tenants/{tenant}/credit-costs/crm.leads.create", json={"cost": value})
                    request: Any = pb.GetCreditCostRequest(
                        tenant_id=tenant, operation_code="crm.leads.create"
                    )

                    def seen(r: Any, v: str = value) -> bool:
                        return str(r.credit_cost.cost.value) == str(
                            json.loads(json.dumps(v)).rstrip("0").rstrip(".")
                        )

                    stub: grpc.UnaryUnaryMultiCallable[Any, Any] = cost
                else:
                    value = f"Bench Title {turn}"
                    http.patch(f"/admin/tenants/{tenant}/users/user-1/profile", json={"title": value})
                    request = pb.GetUserProfileRequest(tenant_id=tenant, user_id="user-1")

                    def seen(r: Any, v: str = value) -> bool:
                        return str(r.user_profile.title) == v

                    stub = profile
                changed = time.monotonic()
                while True:
                    self.reads += 1
                    try:
                        if seen(stub(request, timeout=2)):
                            self.staleness_s.append(time.monotonic() - changed)
                            break
                    except grpc.RpcError:
                        pass
                    if time.monotonic() - changed > STALE_BOUND_S:
                        self.not_seen += 1
                        break
                    time.sleep(0.002)
                pause = CHANGE_INTERVAL_S - (time.monotonic() - changed)
                if pause > 0:
                    time.sleep(pause)


def _entries(target: str) -> dict[str, int]:
    with grpc.insecure_channel(target) as channel:
        stats = channel.unary_unary(
            "/hybridcache.v1.HybridCache/GetCacheStats",
            pb.GetCacheStatsRequest.SerializeToString,
            pb.GetCacheStatsResponse.FromString,
        )(pb.GetCacheStatsRequest(), timeout=5)
    return {pb.Kind.Name(k.kind).removeprefix("KIND_").lower(): int(k.entries) for k in stats.kinds}


def _one(bench: Bench, redis: RedisProcess, wrapper: Any, name: str, workload: Any) -> dict[str, Any]:
    plan = bench.plan
    set_wrapper_latency(wrapper, 0)  # start-up and preload are not what is timed
    with CountingProxy(wrapper.port) as proxy:
        proxied = type("W", (), {"url": proxy.url, "token": wrapper.token})()
        env = service_env(redis, proxied, kind_policies=json.dumps(STRATEGIES[name]))
        with start_service(env) as server:
            assert server.pid is not None
            row: dict[str, Any] = {"rss_at_start": cpus.rss_bytes(server.pid)}
            if name == "full":
                users = 200 if plan.quick else USERS
                preload = tuple(
                    pb.GetUserProfileRequest(tenant_id=t, user_id=f"user-{u}").SerializeToString()
                    for t in TENANTS
                    for u in range(1, users + 1)
                )
                row["preload_failures"] = call_each(server.target, METHODS[2], preload)
            row["wrapper_bytes_startup"] = sum(proxy.counts())
            set_wrapper_latency(wrapper, WRAPPER_LATENCY_MS)
            calls_before = sum(wrapper_requests(wrapper).values())
            bytes_before = sum(proxy.counts())
            redis_before = _redis_out(redis)
            duration = 3.0 if plan.quick else 8.0
            prober = _Prober(server.target, wrapper, time.monotonic() + 1.0 + duration)
            prober.start()
            result = bench.pool.run(
                Call(server.target, "", workload.requests, methods=METHODS, method_of=workload.method_of),
                in_flight=IN_FLIGHT,
                warmup_s=1.0,
                duration_s=duration,
                max_calls=len(workload.requests),
            )
            prober.join(STALE_BOUND_S + 5)
            calls = sum(wrapper_requests(wrapper).values()) - calls_before
            reads = result.summary.samples + result.summary.errors + prober.reads
            stale = sorted(prober.staleness_s)
            row |= {
                "read_p50_us": result.summary.p50_us,
                "read_p99_us": result.summary.p99_us,
                "reads_per_s": result.summary.throughput_per_s,
                "read_errors": result.summary.errors,
                "reads_counted": reads,
                "wrapper_calls_per_1000_reads": round(calls * 1000 / max(1, reads), 1),
                "wrapper_bytes_workload": sum(proxy.counts()) - bytes_before,
                "redis_bytes_out_workload": _redis_out(redis) - redis_before,
                "rss_after": cpus.rss_bytes(server.pid),
                "entries": _entries(server.target),
                "changes": len(stale) + prober.not_seen,
                "staleness_p50_ms": round(percentile(stale, 50) * 1000, 1) if stale else None,
                "staleness_max_ms": round(stale[-1] * 1000, 1) if stale else None,
                "changes_not_seen_within_3s": prober.not_seen,
            }
    set_wrapper_latency(wrapper, 0)
    return row


def strategy_group(bench: Bench, redis: RedisProcess, wrapper: Any) -> Group:
    group = Group("strategy")
    workload = build(5_000 if bench.plan.quick else 60_000)
    group.values["workload"] = (
        f"{len(TENANTS)} tenants x {USERS:,} users x 1,000 operation codes; reads 40% GetCreditCost, "
        f"40% CheckPermission, 20% GetUserProfile, Zipf s=1 (distinct keys read: {workload.distinct_keys}); "
        f"{IN_FLIGHT} in flight; Wrapper at {WRAPPER_LATENCY_MS} ms; one change every {CHANGE_INTERVAL_S} s"
    )
    rows = {name: _one(bench, redis, wrapper, name, workload) for name in STRATEGIES}
    baseline = rows["on-demand"]["rss_at_start"]  # a Service holding (almost) nothing
    for name, row in rows.items():
        row["storage_bytes"] = row["rss_after"] - baseline
        row["network_bytes"] = (
            row["wrapper_bytes_startup"] + row["wrapper_bytes_workload"] + row["redis_bytes_out_workload"]
        )
        group.values[name] = row
    full, hybrid = rows["full"], rows["hybrid"]
    storage = ratio(hybrid["storage_bytes"], full["storage_bytes"])
    network = ratio(hybrid["network_bytes"], full["network_bytes"])
    p50 = ratio(hybrid["read_p50_us"], full["read_p50_us"])
    group.target(
        "strategy: hybrid vs full replication",
        "storage ≤ 0.20×, network ≤ 0.20×, read p50 ≤ 1.2×",
        f"storage {storage}×, network {network}×, read p50 {p50}×",
        storage <= 0.2 and network <= 0.2 and p50 <= 1.2,
    )
    return group
