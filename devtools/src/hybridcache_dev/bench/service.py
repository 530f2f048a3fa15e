"""Figures of the real Service next to the empty RPC on the same server, same gate, same run.

floor      a bare grpc.server (4 threads, no interceptor) answering an empty method: the
           reference of every figure here, measured interleaved with them
hits       GetCreditCost / CheckPermission / GetUserProfile (warmed) at 1 and 16 in flight, on
           the Service as shipped (its defaults: one JSON log line per RPC), and the empty
           method behind the same gate (the gate's own cost)
unlogged   a hit with HYBRIDCACHE_LOG_RPCS off (what the log line costs)
wrapper    with the Wrapper at 5 ms: a hit vs a direct Wrapper call; 16 concurrent misses
           (every call a user profile never read before) vs the Wrapper's own latency
"""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx

from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache_dev.bench import cpus
from hybridcache_dev.bench.floor import concurrent_http_summary, http_get_summary
from hybridcache_dev.bench.loadgen import Call
from hybridcache_dev.bench.nearcache import near_cache_figure
from hybridcache_dev.bench.servers import EMPTY_METHOD, BenchServer
from hybridcache_dev.bench.stack import (
    TENANTS,
    USERS,
    call_each,
    operation_codes,
    service_env,
    set_wrapper_latency,
    start_service,
)
from hybridcache_dev.bench.stats import Summary, median_of, ratio
from hybridcache_dev.bench.suite import Bench, Figure, Group, Load
from hybridcache_dev.stack.redis_process import RedisProcess

SERVICE = "/hybridcache.v1.HybridCache/"
WRAPPER_LATENCY_MS = 5
# The Wrapper-at-5 ms figures are slow (~10 ms a call): a few hundred samples per run, and
# the figure is the median run's (the samples column then counts one run).
_MEDIAN_RUN = {"percentiles": "median of the runs (field by field)"}
HIT_USERS = 1_000  # profiles warmed before the hit figures (200 per tenant)


def hit_requests() -> dict[str, tuple[str, tuple[bytes, ...]]]:
    codes = operation_codes()
    credit = [pb.GetCreditCostRequest(tenant_id=t, operation_code=c) for c in codes for t in TENANTS]
    permission = [
        pb.CheckPermissionRequest(tenant_id=t, user_id=f"user-{u}", permission=codes[u % len(codes)])
        for u in range(1, 1001)
        for t in TENANTS
    ]
    profile = [
        pb.GetUserProfileRequest(tenant_id=TENANTS[u % len(TENANTS)], user_id=f"user-{u}")
        for u in range(1, HIT_USERS + 1)
    ]
    return {
        "GetCreditCost": (SERVICE + "GetCreditCost", tuple(m.SerializeToString() for m in credit)),
        "CheckPermission": (SERVICE + "CheckPermission", tuple(m.SerializeToString() for m in permission)),
        "GetUserProfile": (SERVICE + "GetUserProfile", tuple(m.SerializeToString() for m in profile)),
    }


def service_group(bench: Bench, redis: RedisProcess, wrapper: Any) -> Group:
    group = Group("service")
    requests = hit_requests()
    set_wrapper_latency(wrapper, 0)
    # The Service as shipped: its defaults (one JSON log line per RPC at INFO, to a pipe read
    # on the load core as a container runtime reads it), insecure dev mode for the caller.
    shipped = service_env(redis, wrapper, log_rpcs="true", log_level="info")
    with BenchServer("sync-bare") as bare, start_service(shipped) as server:
        failed = call_each(server.target, *requests["GetUserProfile"])
        group.values["profile_warmup_failures"] = failed
        loads = {}
        for n in (1, 16):
            # The true floor: a bare grpc.server (4 threads, no interceptor) answering the empty
            # method; then the same empty method behind the Service's gate, so the gate's own
            # cost shows apart from the handlers'.
            loads[f"floor.empty.x{n}"] = Load(Call(bare.target, EMPTY_METHOD), n, bare.pid)
            loads[f"service.empty.x{n}"] = Load(Call(server.target, EMPTY_METHOD), n, server.pid)
            for name, (method, reqs) in requests.items():
                loads[f"{name}.hit.x{n}"] = Load(Call(server.target, method, reqs), n, server.pid)
            # A/A control: the floor again, as a load of its own. Its ratio to the first is
            # what this host's noise alone does to a ratio measured this way.
            loads[f"floor.empty.control.x{n}"] = Load(Call(bare.target, EMPTY_METHOD), n, bare.pid)
        for figure in bench.compare(loads).values():
            group.add(figure)
        _control_values(group)
        _hit_targets(group)
        _cpu_budget(group)
        _wrapper_figures(bench, group, server, wrapper, requests)
        _near_cache(bench, group, server.target)
    with start_service(service_env(redis, wrapper)) as quiet:
        # One run: an extra (not a target), the same hit without the per-RPC log line.
        quiet_figures = Bench(dataclasses.replace(bench.plan, runs=1), bench.pool).compare(
            {
                "GetCreditCost.hit.unlogged.x16": Load(
                    Call(quiet.target, *requests["GetCreditCost"]), 16, quiet.pid
                )
            }
        )
        group.add(quiet_figures["GetCreditCost.hit.unlogged.x16"])
    return group


def _ratios(of: Summary, to: Summary) -> str:
    return (
        f"p50 {ratio(of.p50_us, to.p50_us)}×, p99 {ratio(of.p99_us, to.p99_us)}×, "
        f"throughput {ratio(of.throughput_per_s, to.throughput_per_s)}×"
    )


def _control_values(group: Group) -> None:
    f = group.figures
    for n in (1, 16):
        first, again = f[f"floor.empty.x{n}"].summary, f[f"floor.empty.control.x{n}"].summary
        group.values[f"control_x{n}"] = f"the floor against itself: {_ratios(again, first)}"


HITS = ("GetCreditCost", "CheckPermission", "GetUserProfile")


def _hit_targets(group: Group) -> None:
    f = group.figures
    for n in (1, 16):
        floor = f[f"floor.empty.x{n}"].summary
        for name in HITS:
            hit = f[f"{name}.hit.x{n}"].summary
            p50, p99 = ratio(hit.p50_us, floor.p50_us), ratio(hit.p99_us, floor.p99_us)
            group.target(
                f"{name} hit x{n} vs the bare floor",
                "p50 ≤ 1.10×, p99 ≤ 1.25×",
                f"p50 {p50}× ({hit.p50_us} vs {floor.p50_us} µs), "
                f"p99 {p99}× ({hit.p99_us} vs {floor.p99_us} µs)",
                p50 <= 1.10 and p99 <= 1.25,
            )
    for n in (1, 16):
        floor_rate = f[f"floor.empty.x{n}"].summary.throughput_per_s
        for name in HITS:
            hits = f[f"{name}.hit.x{n}"].summary.throughput_per_s
            group.target(
                f"{name} hit throughput x{n} vs the bare floor",
                "≥ 0.90×",
                f"{ratio(hits, floor_rate)}× ({hits:,.0f} vs {floor_rate:,.0f} /s, {n} in flight)",
                ratio(hits, floor_rate) >= 0.90,
            )
    for n in (1, 16):
        empty, floor = f[f"service.empty.x{n}"].summary, f[f"floor.empty.x{n}"].summary
        group.values[f"gate_x{n}"] = f"the empty method behind the gate vs bare: {_ratios(empty, floor)}"
    best = max(f[f"{name}.hit.x16"].summary.throughput_per_s for name in ("GetCreditCost", "CheckPermission"))
    group.target(
        "cache hits per second per server core",
        "≥ 10,000 /s",
        f"{best:,.0f} /s (replicated-kind hits, 16 in flight, server pinned to one core; "
        f"the bare floor: {f['floor.empty.x16'].summary.throughput_per_s:,.0f} /s)",
        best >= 10_000,
    )


def _cpu_budget(group: Group) -> None:
    """Server CPU µs per call at 16 in flight (the server's core saturated): the floor, the
    gate's empty method and each hit, and what each adds to the one before."""
    f = group.figures

    def per_call(name: str) -> float:
        rate = f[name].notes.get("calls_per_server_cpu_s") or 0
        return round(1e6 / rate, 1) if rate else 0.0

    floor, gated = per_call("floor.empty.x16"), per_call("service.empty.x16")
    budget = {"floor": floor, "gate": round(gated - floor, 1)}
    for name in HITS:
        budget[f"{name} handler"] = round(per_call(f"{name}.hit.x16") - gated, 1)
    group.values["cpu_us_per_call_x16"] = budget


def _wrapper_figures(
    bench: Bench, group: Group, server: Any, wrapper: Any, requests: dict[str, tuple[str, tuple[bytes, ...]]]
) -> None:
    """Wrapper at 5 ms: hits are unaffected; misses cost one Wrapper call each."""
    set_wrapper_latency(wrapper, WRAPPER_LATENCY_MS)
    try:
        direct_runs: list[Summary] = []
        with httpx.Client(base_url=wrapper.url, headers=wrapper.headers) as http:
            for _ in range(bench.plan.runs):
                direct_runs.append(
                    http_get_summary(
                        http, f"/api/tenants/{TENANTS[0]}/users/user-1/profile", count=_direct_count(bench)
                    )
                )
        direct = group.add(
            Figure(
                "wrapper5ms.direct-get.x1",
                median_of(direct_runs),
                direct_runs,
                _MEDIAN_RUN | {"in_flight": 1},
            )
        )
        hit = bench.compare(
            {
                "GetCreditCost.hit.wrapper5ms.x1": Load(
                    Call(server.target, *requests["GetCreditCost"]), 1, server.pid
                )
            }
        )["GetCreditCost.hit.wrapper5ms.x1"]
        group.add(hit)
        r = ratio(hit.summary.p50_us, direct.summary.p50_us)
        group.target(
            "hit p50 vs a direct Wrapper call (Wrapper at 5 ms)",
            "≤ 0.1×",
            f"{r}× ({hit.summary.p50_us} vs {direct.summary.p50_us} µs)",
            r <= 0.1,
        )
        concurrent_runs = [
            concurrent_http_summary(
                wrapper.url,
                wrapper.headers,
                [
                    f"/api/tenants/{t}/users/user-{u}/profile"
                    for u in range(1, 1 + _direct_count(bench) // 5)
                    for t in TENANTS
                ],
                in_flight=16,
            )
            for _ in range(bench.plan.runs)
        ]
        concurrent = group.add(
            Figure(
                "wrapper5ms.direct-get.x16",
                median_of(concurrent_runs),
                concurrent_runs,
                _MEDIAN_RUN | {"in_flight": 16},
            )
        )
        misses, cpu_per_miss = _miss_runs(bench, server)
        figure = group.add(
            Figure(
                "GetUserProfile.miss.wrapper5ms.x16",
                median_of(misses),
                misses,
                _MEDIAN_RUN | {"in_flight": 16, "server_cpu_us_per_call": cpu_per_miss},
            )
        )
        r = ratio(figure.summary.p50_us, direct.summary.p50_us)
        r16 = ratio(figure.summary.p50_us, concurrent.summary.p50_us)
        group.target(
            "16 concurrent misses p50 vs the Wrapper's latency (5 ms)",
            "≤ 1.5×",
            f"{r}× ({figure.summary.p50_us} vs {direct.summary.p50_us} µs, one direct call at a time); "
            f"{r16}× the Wrapper's own p50 at 16 direct concurrent calls ({concurrent.summary.p50_us} µs); "
            f"the server spends {cpu_per_miss:,.0f} µs of CPU per miss, so 16 misses need "
            f"{16 * cpu_per_miss / 1000:.1f} ms of its core",
            r <= 1.5,
        )
    finally:
        set_wrapper_latency(wrapper, 0)


def _near_cache(bench: Bench, group: Group, target: str) -> None:
    try:
        figure = group.add(near_cache_figure(bench, target))
    except Exception as exc:  # the near-cache needs WatchChanges to go live; say why not
        group.missing.append(f"client near-cache read: {type(exc).__name__}: {exc}")
        group.target("client near-cache read", "≤ 1 µs", "not measured", None, str(exc))
        return
    # Judged on the p50: a batch whose mean is far above it was interrupted (the GIL went to
    # the watch thread, or the OS ran something else), which no dict lookup can avoid.
    group.target(
        "client near-cache read (hit)",
        "≤ 1 µs",
        f"{figure.summary.p50_us} µs p50, {figure.summary.p99_us} µs p99 (means over batches of 1,000 reads)",
        figure.summary.p50_us <= 1.0,
    )


def _direct_count(bench: Bench) -> int:
    return 200 if bench.plan.quick else 600  # ~10 ms each; the figure states its sample count


def _miss_runs(bench: Bench, server: Any) -> tuple[list[Summary], float]:
    """Each run reads profiles no run read before (users above HIT_USERS, disjoint per run).
    Also returns the server's CPU µs per miss (median run): what bounds misses at 16 in flight
    on one core, whatever the Wrapper's latency."""
    pool = [
        pb.GetUserProfileRequest(tenant_id=t, user_id=f"user-{u}").SerializeToString()
        for u in range(HIT_USERS + 1, USERS + 1)
        for t in TENANTS
    ]
    per_run = len(pool) // bench.plan.runs
    out = []
    cpu_per_miss: list[float] = []
    for run in range(bench.plan.runs):
        chunk = tuple(pool[run * per_run : (run + 1) * per_run])
        cpu_before = cpus.process_cpu_s(server.pid)
        result = bench.pool.run(
            Call(server.target, SERVICE + "GetUserProfile", chunk),
            in_flight=16,
            warmup_s=0.0,
            duration_s=bench.plan.max_s,
            max_calls=min(bench.plan.max_calls, per_run * 9 // 10),
        )
        out.append(result.summary)
        cpu_per_miss.append(
            (cpus.process_cpu_s(server.pid) - cpu_before) / max(1, result.summary.samples) * 1e6
        )
    return out, round(sorted(cpu_per_miss)[len(cpu_per_miss) // 2], 1)
