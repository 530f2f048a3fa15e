#!/usr/bin/env python
"""Measure the consumer's replica side by side in one run (figures for docs/BENCHMARKS.md):

* NearCache reads (credit_cost, local check_permission) vs the CheckPermission RPC vs a
  redis-py GET, all from this process against the real Service (spawned, its own process)
  and the private redis-server;
* ListSnapshot load time and bytes on the wire for one tenant of ~10k entries (`--users
  99000` for ~100k), and a NearCache's start-to-ready time on it;
* a NearCache's memory per entry (tracemalloc: what its load allocated and kept, divided
  by the entries it holds);
* publish -> consumer's local value updated: a credit cost changed through the Wrapper's
  admin API, timed until each of 1 and then 100 NearCaches reads the new value locally
  (`--changes` changes, p50/p99 over every consumer's every change).

    .venv/bin/python scripts/measure_replica.py [--users 9000] [--ops 1000] [--changes 50]
        [--consumers 100] [--wrapper-timeout-s 2.0]   (1M entries: --users 999000 --wrapper-timeout-s 60)

Local reads are timed in batches of 1,000 (a single ~0.1 µs read is below the clock's
resolution): their figures are means per read over a batch; the RPC and GET are timed
one by one. Medians of the samples are printed, p99 beside.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import grpc
import httpx
import redis

from hybridcache.client import ClientConfig, HybridCacheClient, NearCache
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.bench.stack import service_env, start_service
from hybridcache_dev.stack.redis_process import RedisProcess
from hybridcache_dev.wrapper import launch

TENANT = "tenant-0001"
BATCH = 1_000


def batched_ns(read: Callable[[], object], batches: int) -> list[float]:
    samples: list[float] = []
    for _ in range(batches):
        started = time.perf_counter_ns()
        for _ in range(BATCH):
            read()
        samples.append((time.perf_counter_ns() - started) / BATCH)
    return samples


def single_ns(call: Callable[[], object], count: int) -> list[float]:
    samples: list[float] = []
    for _ in range(count):
        started = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - started)
    return samples


def line(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{name:<44} p50 {statistics.median(ordered) / 1000:10.3f} µs   p99 {p99 / 1000:10.3f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=9_000)
    parser.add_argument("--ops", type=int, default=1_000)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--consumers", type=int, default=100)
    # A 1M-entry tenant's snapshot takes the Wrapper longer than the default 2 s per call.
    parser.add_argument("--wrapper-timeout-s", default="2.0")
    args = parser.parse_args()
    with RedisProcess() as redis_server:
        wrapper = launch(redis_server.url, scale=f"1x{args.users}x{args.ops}", ready_timeout=300.0)
        try:
            # All consumers of this process are one caller: room for every stream.
            streams = str(2 * args.consumers + 10)
            env = service_env(
                redis_server,
                wrapper,
                tenants=TENANT,
                max_streams=streams,
                max_streams_per_caller=streams,
                wrapper_timeout_s=args.wrapper_timeout_s,
            )
            service = start_service(env, ready_timeout_s=300.0)
            try:
                measure(service.target, redis_server.url)
                memory_per_entry(service.target)
                for consumers in (1, args.consumers):
                    propagation(service.target, wrapper, consumers, args.changes)
            finally:
                service.stop()
        finally:
            wrapper.stop()


def measure(target: str, redis_url: str) -> None:
    with grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        stub = pb_grpc.HybridCacheStub(channel)
        request = pb.ListSnapshotRequest(tenant_id=TENANT)
        list(stub.ListSnapshot(request, timeout=60))  # warm
        loads, sizes, counts = [], [], []
        for _ in range(5):
            started = time.perf_counter()
            pages = list(stub.ListSnapshot(request, timeout=60))
            loads.append(time.perf_counter() - started)
            sizes.append(sum(page.ByteSize() for page in pages))
            counts.append(pages[-1].total_items)
        print(
            f"ListSnapshot {counts[0]} items: median {statistics.median(loads) * 1000:.0f} ms "
            f"(min {min(loads) * 1000:.0f}, max {max(loads) * 1000:.0f}; 5 runs), "
            f"{sizes[0]:,} bytes of messages in {len(pages)} pages"
        )
    with HybridCacheClient(target, ClientConfig()) as client:
        ready = []
        for _ in range(3):
            started = time.perf_counter()
            with NearCache(client, TENANT) as probe:
                if not probe.wait_ready(60):
                    raise RuntimeError("the near cache did not get ready")
                ready.append(time.perf_counter() - started)
        print(f"NearCache start to ready: median {statistics.median(ready) * 1000:.0f} ms (3 runs)")
        with NearCache(client, TENANT) as near:
            if not near.wait_ready(60):
                raise RuntimeError("the near cache did not get ready")
            code = next(iter(near._credit_costs))
            user = next(u for u, s in near._user_status.items() if s.active and s.role_ids)
            role = near._user_status[user].role_ids[0]
            permission = sorted(near.role_permissions(role) or ["crm.leads.read"])[0].replace("*", "x")
            line("NearCache.credit_cost (batch mean)", batched_ns(lambda: near.credit_cost(code), 2_000))
            line(
                "NearCache.check_permission (batch mean)",
                batched_ns(lambda: near.check_permission(user, permission), 2_000),
            )
            line(
                "CheckPermission RPC",
                single_ns(lambda: client.check_permission(TENANT, user, permission), 3_000),
            )
    client_redis = redis.Redis.from_url(redis_url)
    client_redis.set("bench:key", "2.5")
    line("redis-py GET", single_ns(lambda: client_redis.get("bench:key"), 3_000))
    client_redis.close()


def memory_per_entry(target: str) -> None:
    with HybridCacheClient(target, ClientConfig()) as client:
        tracemalloc.start()
        baseline = tracemalloc.get_traced_memory()[0]
        near = NearCache(client, TENANT)
        try:
            if not near.wait_ready(120):
                raise RuntimeError("the near cache did not get ready")
            held = tracemalloc.get_traced_memory()[0] - baseline
            items = near.stats().items
        finally:
            tracemalloc.stop()
            near.close()
    print(f"NearCache memory (tracemalloc): {held / items:.0f} B/entry, {items} entries, {held / 1e6:.1f} MB")


def propagation(target: str, wrapper: Any, consumers: int, changes: int) -> None:
    """Wrapper write (publish) -> every consumer's local read returns the new value."""
    with HybridCacheClient(target, ClientConfig()) as client:
        # One after another: 100 replicas of 100k entries loading at once in this one process
        # (one GIL) outlast the snapshot deadline; the figure is of live consumers anyway.
        nears: list[NearCache] = []
        loading = time.perf_counter()
        try:
            for _ in range(consumers):
                nears.append(NearCache(client, TENANT))
                if not nears[-1].wait_ready(120):
                    raise RuntimeError("a near cache did not get ready")
            print(f"{consumers} consumer(s) ready one after another in {time.perf_counter() - loading:.1f} s")
            code = next(iter(nears[0]._credit_costs))
            samples: list[float] = []
            with httpx.Client(base_url=wrapper.url, headers=wrapper.headers, timeout=10) as admin:
                for n in range(changes):
                    value = Decimal(1000 + n) / 100
                    waiting = set(range(consumers))
                    started = time.perf_counter()
                    admin.put(f"/admin/tenants/{TENANT}/credit-costs/{code}", json={"cost": str(value)})
                    while waiting:
                        for index in list(waiting):
                            if nears[index].credit_cost(code) == value:
                                samples.append(time.perf_counter() - started)
                                waiting.discard(index)
                        if time.perf_counter() - started > 10:
                            raise RuntimeError(f"{len(waiting)} consumers missed a change for 10 s")
                        time.sleep(0.0002)  # polling the local value; the write's own time is in the figure
        finally:
            for near in nears:
                near.close()
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(
        f"publish -> local value, {consumers} consumer(s): p50 {statistics.median(samples) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms ({changes} changes, {len(samples)} samples; includes the Wrapper's write)"
    )


if __name__ == "__main__":
    main()
