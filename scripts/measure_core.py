"""Measure the cache core on its own (no gRPC, no HTTP): the figures in docs/CORE.md.

    .venv/bin/python scripts/measure_core.py [--quick]

Hit paths are timed with timeit (median of several repeats, ns per call); memory with
tracemalloc (everything the replica retains per credit-cost entry: key, value, entry and
dict slot); snapshot loads with perf_counter.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import timeit
import tracemalloc
from collections.abc import Callable

from hybridcache.server.core import HybridCache, Kind, Snapshot
from hybridcache.server.core.values import CreditCost, RolePermissions, UserProfile, UserStatus, Value

T = "acme"


class Source:
    """Serves generated snapshots and items; `snapshots` may be replaced between loads."""

    def __init__(self, credit_costs: Callable[[], dict[str, Value]]) -> None:
        self.credit_costs = credit_costs

    def fetch_snapshot(self, tenant_id: str, kind: Kind, deadline: float | None) -> Snapshot:
        if kind is Kind.CREDIT_COSTS:
            return Snapshot(tenant_id, kind, 1, self.credit_costs())
        if kind is Kind.ROLE_PERMISSIONS:
            roles: dict[str, Value] = {
                "viewer": RolePermissions("viewer", frozenset({"crm.leads.read", "crm.deals.read"}), 1),
                "sales": RolePermissions("sales", frozenset({"crm.leads.*", "crm.deals.*", "hr.self"}), 1),
            }
            return Snapshot(tenant_id, kind, 1, roles)
        if kind is Kind.USER_STATUS:
            return Snapshot(tenant_id, kind, 1, {"u1": UserStatus("u1", True, ("viewer", "sales"), 1)})
        return Snapshot(tenant_id, kind, 1, {})

    def fetch_item(self, tenant_id: str, kind: Kind, key: str, deadline: float | None) -> Value:
        return UserProfile(key, "Ada Lovelace", f"{key}@example.com", "Engineer", "R&D", "ou-1", "", 1)


def credit_costs(n: int, version_offset: int = 0) -> dict[str, Value]:
    """n distinct entries, built like the Wrapper client builds them (key is the value's code)."""
    items: dict[str, Value] = {}
    for i in range(n):
        code = f"crm.operation.{i:07d}"
        items[code] = CreditCost(code, f"{i % 1000}.{i % 7 + 1}", (i % 50) + 1 + version_offset)
    return items


def ns_per_call(call: Callable[[], object], number: int, repeat: int) -> tuple[float, float]:
    """(median, min) ns per call over `repeat` runs of `number` calls. The minimum is the least
    disturbed run: on a shared machine it is the better estimate of the cost itself."""
    runs = timeit.repeat(call, number=number, repeat=repeat)
    return statistics.median(runs) / number * 1e9, min(runs) / number * 1e9


def hit_paths(number: int, repeat: int) -> None:
    cache = HybridCache(Source(lambda: credit_costs(10_000)))
    cache.ensure_tenant(T)
    cache.get(T, Kind.USER_PROFILES, "u1")
    code = "crm.operation.0004242"
    check = cache.check_permission
    rows = [
        ("get() replica kind (credit-costs), hit", lambda: cache.get(T, Kind.CREDIT_COSTS, code)),
        ("get() on-demand kind (user-profiles), hit", lambda: cache.get(T, Kind.USER_PROFILES, "u1")),
        ("check_permission(), granted by 2nd role's wildcard", lambda: check(T, "u1", "crm.leads.create")),
        ("check_permission(), no grant (all roles scanned)", lambda: check(T, "u1", "fin.pay")),
    ]
    table = {code: 1}
    baseline = ns_per_call(lambda: table.get(code), number, repeat)[1]
    print(f"| call ({repeat} runs x {number:,} calls) | median ns | min ns | min / `dict.get` |")
    print("|---|---:|---:|---:|")
    print(f"| `dict.get(key)`, a hit (the machine's yardstick) | | {baseline:,.0f} | 1 |")
    for name, call in rows:
        median, best = ns_per_call(call, number, repeat)
        print(f"| {name} | {median:,.0f} | {best:,.0f} | {best / baseline:,.0f} |")


def memory_per_entry(n: int) -> float:
    gc.collect()
    tracemalloc.start()
    cache = HybridCache(Source(lambda: credit_costs(n)))
    before = tracemalloc.get_traced_memory()[0]
    cache.ensure_tenant(T)  # the snapshot and its dict are garbage afterwards; entries remain
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert cache.stats().kinds[Kind.CREDIT_COSTS].entries == n
    return (after - before) / n


def snapshot_load(n: int) -> tuple[float, float]:
    """(first load, resync with every entry changed) in ms, snapshot generation excluded."""
    first = credit_costs(n)
    second = credit_costs(n, version_offset=100)
    source = Source(lambda: first)
    cache = HybridCache(source)
    started = time.perf_counter()
    cache.ensure_tenant(T)
    load_ms = (time.perf_counter() - started) * 1000
    source.credit_costs = lambda: second
    started = time.perf_counter()
    changes = cache.resync_tenant(T)
    resync_ms = (time.perf_counter() - started) * 1000
    assert len(changes) == n
    return load_ms, resync_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations, 100k entries only")
    args = parser.parse_args()
    number, repeat = (20_000, 3) if args.quick else (200_000, 7)
    print(f"Python {sys.version.split()[0]}\n")
    hit_paths(number, repeat)
    print("\n| replicated credit-cost entries | bytes per entry (tracemalloc) |\n|---:|---:|")
    for n in (100_000,) if args.quick else (100_000, 1_000_000):
        print(f"| {n:,} | {memory_per_entry(n):,.0f} |")
    load_ms, resync_ms = snapshot_load(100_000)
    print("\n| snapshot of 100,000 credit costs | ms |\n|---|---:|")
    print(f"| first load (build entries, install) | {load_ms:,.0f} |")
    print(f"| resync, every entry changed (build, merge, diff, swap) | {resync_ms:,.0f} |")


if __name__ == "__main__":
    main()
