"""The client near-cache read (`hybridcache.client.NearCache.credit_cost`), in this process
against the real Service: a hit is one dict lookup in the caller's process.

Timing each ~0.1 µs read with perf_counter_ns would measure the clock, so reads are timed
in batches of BATCH and each batch's mean per read is one sample: the p50 / p99 are of
those means (stated as such in the figure's notes).
"""

from __future__ import annotations

import time

from hybridcache_dev.bench.stack import TENANTS, operation_codes
from hybridcache_dev.bench.stats import Summary, median_of, summarize
from hybridcache_dev.bench.suite import Bench, Figure

BATCH = 1_000
CODES = 100


def near_cache_figure(bench: Bench, target: str) -> Figure:
    from hybridcache.client import ClientConfig, HybridCacheClient, NearCache  # noqa: PLC0415

    codes = operation_codes()[:CODES]
    batches = 200 if bench.plan.quick else 10_000
    runs: list[Summary] = []
    with (
        HybridCacheClient(target, ClientConfig()) as client,
        NearCache(client, TENANTS[0], operation_codes=codes) as near,
    ):
        if not near.wait_live(15):
            raise RuntimeError("the near-cache's watch did not go live within 15 s")
        for code in codes:
            near.credit_cost(code)  # every code loaded: what follows are hits
        read = near.credit_cost
        keys = (codes * (BATCH // CODES + 1))[:BATCH]
        clock = time.perf_counter_ns
        for _ in range(bench.plan.runs):
            samples = []
            for _ in range(batches):
                started = clock()
                for key in keys:
                    read(key)
                samples.append((clock() - started) // BATCH)
            runs.append(summarize(samples, seconds=sum(samples) / 1e9))  # reads per second
    summary = median_of(runs)
    return Figure(
        "NearCache.credit_cost.hit",
        summary,
        runs,
        {"latency_is": f"mean per read over batches of {BATCH}", "in_flight": 1},
    )
