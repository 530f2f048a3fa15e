"""`hybridcache bench [--quick] [--only NAME ...]`: run the suite, write JSON and Markdown.

Everything it needs is started here and stopped at the end: a private Redis (never the
one on 6379), the development Wrapper (big deterministic tenants), the servers under test
(spawned, pinned to core 0) and the load processes (core 1).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridcache_dev.bench import cpus, report
from hybridcache_dev.bench.loadgen import LoadPool
from hybridcache_dev.bench.suite import Bench, Group, Plan
from hybridcache_dev.stack.redis_process import RedisProcess

GROUPS = (
    "server-model",
    "redis",
    "wrapper",
    "service",
    "http-client",
    "workers",
    "peers",
    "propagation",
    "memory",
    "strategy",
)
# tenants x users x operation codes: the strategy workload's data (4k users rather than 10k keeps
# the full-replication preload and the whole suite inside its 10-minute budget)
WRAPPER_SCALE = "5x4000x1000"


@dataclass
class Stack:
    """The shared dependencies, started on first use."""

    redis: RedisProcess
    stack: contextlib.ExitStack
    _wrapper: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)  # this run's groups so far, by name

    def wrapper(self) -> Any:
        if self._wrapper is None:
            from hybridcache_dev.wrapper.launcher import launch  # noqa: PLC0415

            self._wrapper = self.stack.enter_context(
                launch(self.redis.url, scale=WRAPPER_SCALE, ready_timeout=300.0)
            )
            cpus.pin_process_tree(self._wrapper.pid, cpus.LOAD_CPU)
        return self._wrapper


def _run_group(name: str, bench: Bench, stack: Stack) -> Group:  # noqa: PLR0911 (one branch per group)
    # Imported per group: a group whose parts have not landed yet fails alone, with its reason.
    if name == "server-model":
        from hybridcache_dev.bench.floor import server_model  # noqa: PLC0415

        return server_model(bench)
    if name == "redis":
        from hybridcache_dev.bench.floor import redis_floor  # noqa: PLC0415

        cpus.pin_process_tree(stack.redis.pid or 0, cpus.SERVER_CPU)
        try:
            return redis_floor(bench, stack.redis)
        finally:
            cpus.pin_process_tree(stack.redis.pid or 0, cpus.LOAD_CPU)
    if name == "wrapper":
        from hybridcache_dev.bench.floor import wrapper_floor  # noqa: PLC0415

        w = stack.wrapper()
        return wrapper_floor(
            bench, w.url, w.headers, w.pid, "/api/tenants/tenant-0001/credit-costs/crm.leads.create"
        )
    if name == "service":
        from hybridcache_dev.bench.service import service_group  # noqa: PLC0415

        return service_group(bench, stack.redis, stack.wrapper())
    if name == "http-client":
        from hybridcache_dev.bench.httpfloor import http_client_group  # noqa: PLC0415

        return http_client_group(bench, stack.wrapper(), stack.groups.get("service"))
    if name == "workers":
        from hybridcache_dev.bench.workers import workers_group  # noqa: PLC0415

        return workers_group(bench, stack.redis, stack.wrapper())
    if name == "peers":
        from hybridcache_dev.bench.peers import peers_group  # noqa: PLC0415

        return peers_group(bench, stack.redis, stack.wrapper())
    if name == "propagation":
        from hybridcache_dev.bench.propagation import propagation_group  # noqa: PLC0415

        return propagation_group(bench, stack.redis, stack.wrapper())
    if name == "memory":
        from hybridcache_dev.bench.memory import memory_group  # noqa: PLC0415

        return memory_group(bench)
    if name == "strategy":
        from hybridcache_dev.bench.strategy import strategy_group  # noqa: PLC0415

        return strategy_group(bench, stack.redis, stack.wrapper())
    raise ValueError(name)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hybridcache bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a smoke run: 1 run per figure, small counts")
    p.add_argument("--only", action="append", choices=GROUPS, help="run only this group (repeatable)")
    p.add_argument("--runs", type=int, default=None, help="runs per figure (default 3; the median is kept)")
    p.add_argument("--results", type=Path, default=Path("docs/bench-results"), help="JSON directory")
    p.add_argument("--doc", type=Path, default=Path("docs/BENCHMARKS.md"), help="Markdown to update")
    p.add_argument("--no-write", action="store_true", help="print only; write no files")
    return p.parse_args(argv)


@contextlib.contextmanager
def _stack() -> Iterator[Stack]:
    with contextlib.ExitStack() as exits:
        redis = exits.enter_context(RedisProcess())
        cpus.pin_process_tree(redis.pid or 0, cpus.LOAD_CPU)
        yield Stack(redis, exits)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:  # `hybridcache bench -- --quick`: the separator reaches us
        argv = argv[1:]
    args = parse_args(argv)
    plan = Plan.quick_plan() if args.quick else Plan()
    if args.runs:
        plan = Plan(args.runs, plan.warmup_s, plan.max_s, plan.max_calls, plan.quick)
    env = report.environment(argv)
    names = [g for g in GROUPS if not args.only or g in args.only]
    print(
        f"hybridcache bench: {', '.join(names)} ({'quick' if plan.quick else 'full'}); {env['cpu']}",
        file=sys.stderr,
    )
    started = time.monotonic()
    failed: list[str] = []
    with _stack() as stack, LoadPool(2) as pool:
        bench = Bench(plan, pool)
        for name in names:
            print(f"[{name}]", file=sys.stderr, flush=True)
            try:
                group = _run_group(name, bench, stack)
            except Exception as exc:  # one group failing must not lose the others' figures
                print(f"  FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
                failed.append(name)
                continue
            stack.groups[name] = group
            data = report.group_json(group, env)
            report.print_group(data)
            if not args.no_write and not plan.quick:  # a smoke run never replaces real figures
                report.write_group(args.results, data)
    if not args.no_write and not plan.quick:
        report.write_markdown(args.doc, report.load_groups(args.results))
        report.write_pictures(args.results)
    print(f"done in {time.monotonic() - started:.0f} s; failed: {failed or 'none'}", file=sys.stderr)
    return 1 if failed else 0
