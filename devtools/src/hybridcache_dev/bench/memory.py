"""In-process figures of the cache core, through the real Wrapper client and codec (the HTTP
exchange served by an in-process HTTP server, `StubHTTP`, sending pre-built snapshot JSON):

    bytes per replicated credit-cost entry at 1M entries (tracemalloc: what the loaded
    replica keeps, after the JSON and the parse garbage are gone), and the wall time of
    loading a 100k-entry snapshot (JSON parse + codec + install).

Operation codes look like the scaled seed's (`bench.op0000123.run`), costs are short
decimals, versions small integers: the shape of real entries, not empty strings.
"""

from __future__ import annotations

import gc
import json
import statistics
import time
import tracemalloc
from typing import Any

from hybridcache_dev.bench.suite import Bench, Group
from hybridcache_dev.harness.stub_http import StubHTTP, StubRequest

MEMORY_ENTRIES = 1_000_000
LOAD_ENTRIES = 100_000
_KIND_PATHS = ("credit-costs", "role-permissions", "user-status", "feature-flags")


def _snapshot_body(tenant: str, entries: int) -> bytes:
    items = [
        {
            "operationCode": f"bench.op{j:07d}.run",
            "cost": f"{(j * 37) % 1000 / 100 + 0.01:.2f}",
            "version": 1 + j % 7,
        }
        for j in range(entries)
    ]
    return json.dumps({"tenantId": tenant, "kind": "credit-costs", "revision": 1, "items": items}).encode()


def _stub(tenant: str, body: bytes) -> StubHTTP:
    empty = {
        kind: json.dumps({"tenantId": tenant, "kind": kind, "revision": 1, "items": []}).encode()
        for kind in _KIND_PATHS
    }

    def handle(request: StubRequest) -> tuple[int, bytes]:
        kind = request.path.rsplit("/", 1)[-1]
        return 200, body if kind == "credit-costs" else empty[kind]

    return StubHTTP(handle)


class _Closing:
    """The Wrapper client and its stub server, closed together."""

    def __init__(self, client: Any, stub: StubHTTP) -> None:
        self.client, self.stub = client, stub

    def close(self) -> None:
        self.client.close()
        self.stub.close()


def _cache(tenant: str, body: bytes) -> Any:
    from hybridcache.server.core import DEFAULT_POLICIES, HybridCache  # noqa: PLC0415
    from hybridcache.server.wrapper.client import WrapperClient  # noqa: PLC0415

    stub = _stub(tenant, body)
    client = WrapperClient(stub.url, "t", timeout_s=120)
    return _Closing(client, stub), HybridCache(client, DEFAULT_POLICIES)


def bytes_per_entry(entries: int) -> float:
    body = _snapshot_body("mem", entries)
    client, cache = _cache("mem", body)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache.ensure_tenant("mem")
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    from hybridcache.server.core import Kind  # noqa: PLC0415

    assert cache.get("mem", Kind.CREDIT_COSTS, "bench.op0000001.run").value is not None
    client.close()
    return (after - before) / entries


def load_seconds(entries: int) -> float:
    body = _snapshot_body("load", entries)
    client, cache = _cache("load", body)
    gc.collect()
    started = time.perf_counter()
    cache.ensure_tenant("load")
    seconds = time.perf_counter() - started
    client.close()
    return seconds


def memory_group(bench: Bench) -> Group:
    group = Group("memory")
    entries = 100_000 if bench.plan.quick else MEMORY_ENTRIES
    # One run: the byte count is deterministic (three runs gave the same figure to 0.1 B).
    per_entry = [bytes_per_entry(entries)]
    size = round(statistics.median(per_entry), 1)
    group.values["credit_cost_entries"] = entries
    group.values["bytes_per_replicated_credit_cost_entry"] = size
    group.values["bytes_per_entry_runs"] = [round(v, 1) for v in per_entry]
    group.target(
        f"memory per replicated credit-cost entry at {entries:,} entries",
        "≤ 470 B",
        f"{size} B (tracemalloc; key str + value object + entry + dict slot)",
        size <= 470,
    )
    loads = [load_seconds(LOAD_ENTRIES) for _ in range(bench.plan.runs)]
    seconds = round(statistics.median(loads), 3)
    group.values["snapshot_load_100k_s"] = seconds
    group.values["snapshot_load_100k_runs_s"] = [round(v, 3) for v in loads]
    group.target(
        "snapshot load of 100k entries",
        "< 2 s",
        f"{seconds} s (HTTP from a local stub + JSON parse + codec + install, one core)",
        seconds < 2,
    )
    return group
