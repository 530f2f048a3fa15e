"""`--workers` (HYBRIDCACHE_WORKERS): 1 against 2 worker processes on one port, side by side.

Every server is `hybridcache serve` as shipped (with N > 1, a supervisor and N worker
children, each a full replica; with 1, the one process serves), started on a set of cores:

    w1.core0      1 worker on core 0: the service group's set-up (the baseline)
    w2.core0      2 workers sharing core 0: what a second process costs when no core is free
    w1.cores01    1 worker free to run on both cores, the load generator (core 1) beside it
    w2.cores01    2 workers free to run on both cores, the load generator beside them

With 2 workers the server cannot have a core to itself on this 2-core machine, so the
`cores01` pair shares core 1 with the load generator (and Redis, the Wrapper): the figure a
small VM gives, not a per-core figure. GetCreditCost hits at 16 and 64 in flight; every
caller thread has its own connection (`Call.channels`), since the kernel spreads
connections, not calls, over the workers (SO_REUSEPORT). Server CPU is the sum over the
worker processes (the supervisor only waits); `calls_per_server_cpu_s` is throughput per
total server CPU second. Each worker's resident memory is read after the loads.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hybridcache_dev.bench import cpus
from hybridcache_dev.bench.loadgen import Call
from hybridcache_dev.bench.service import SERVICE, hit_requests
from hybridcache_dev.bench.stack import service_env
from hybridcache_dev.bench.stats import ratio
from hybridcache_dev.bench.suite import Bench, Group, Load
from hybridcache_dev.harness.serve_process import ServeProcess
from hybridcache_dev.stack.redis_process import RedisProcess, free_port

IN_FLIGHT = (16, 64)
CLIENT_PROCESSES = 2  # the runner's LoadPool
SETUPS: dict[str, tuple[int, set[int]]] = {
    "w1.core0": (1, {cpus.SERVER_CPU}),
    "w2.core0": (2, {cpus.SERVER_CPU}),
    "w1.cores01": (1, {cpus.SERVER_CPU, cpus.LOAD_CPU}),
    "w2.cores01": (2, {cpus.SERVER_CPU, cpus.LOAD_CPU}),
}
_READY_TIMEOUT_S = 180.0
_PER_CPU = "calls_per_server_cpu_s"  # Bench.compare's note: throughput per total server CPU second


class Workers:
    """`hybridcache serve` with `count` workers on `cores`, until every worker is SERVING."""

    def __init__(self, env: dict[str, str], count: int, cores: set[int], log_dir: Path) -> None:
        port = free_port()
        env = {
            **env,
            "HYBRIDCACHE_HOST": "127.0.0.1",
            "HYBRIDCACHE_PORT": str(port),
            "HYBRIDCACHE_WORKERS": str(count),
            "HYBRIDCACHE_LOG_LEVEL": "info",  # each worker logs "serving" once its replica is loaded
            "HYBRIDCACHE_DRAIN_S": "0",  # nothing to drain from at the end: stop at once
            "HYBRIDCACHE_GRACE_S": "1",
        }
        self.count = count
        self.process = ServeProcess(env, log_dir / f"workers-{count}-{port}.log")
        with cpus.thread_pinned(cores):  # the supervisor and its workers inherit the cores
            self.process.start(timeout=_READY_TIMEOUT_S)
        try:
            self._wait_all_serving()
        except BaseException:
            self.process.stop()
            raise

    @property
    def target(self) -> str:
        return self.process.target

    @property
    def supervisor_pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    def worker_pids(self) -> tuple[int, ...]:
        # One worker is `hybridcache serve` itself: no supervisor, no SO_REUSEPORT.
        if self.count == 1:
            return (self.supervisor_pid,)
        return tuple(cpus.children(self.supervisor_pid))

    def _wait_all_serving(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while serving_lines(self.process.log_path.read_text(errors="replace")) < self.count:
            if not self.process.running():
                raise RuntimeError(f"hybridcache serve --workers {self.count} exited while starting")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.count} workers not all SERVING within {_READY_TIMEOUT_S} s")
            time.sleep(0.1)  # polling the log for a condition, with a deadline
        if len(self.worker_pids()) != self.count:
            raise RuntimeError(f"expected {self.count} worker processes, found {self.worker_pids()}")


def serving_lines(log: str) -> int:
    """How many workers have logged that they serve (JSON log lines)."""
    return sum('"event": "serving"' in line for line in log.splitlines())


def split(cpu_s: list[float]) -> list[float]:
    """Each worker's share of the CPU its server used (1.0 for one worker)."""
    total = sum(cpu_s)
    return [round(c / total, 2) if total else 0.0 for c in cpu_s]


@contextlib.contextmanager
def _servers(redis: RedisProcess, wrapper: Any) -> Iterator[dict[str, Workers]]:
    env = service_env(redis, wrapper)
    with tempfile.TemporaryDirectory(prefix="hc-bench-workers-") as tmp, contextlib.ExitStack() as stops:
        servers: dict[str, Workers] = {}
        for name, (count, cores) in SETUPS.items():
            server = Workers(env, count, cores, Path(tmp))
            stops.callback(server.process.stop, 20)
            servers[name] = server
        yield servers


def workers_group(bench: Bench, redis: RedisProcess, wrapper: Any) -> Group:
    group = Group("workers")
    group.values["pinning"] = (
        "core0: every server process on core 0, the load generator on core 1; cores01: the "
        "server processes on cores 0 and 1, sharing core 1 with the load generator, Redis and the Wrapper"
    )
    method, requests = hit_requests()["GetCreditCost"]
    assert method == SERVICE + "GetCreditCost"
    with _servers(redis, wrapper) as servers:
        pids = {name: server.worker_pids() for name, server in servers.items()}
        cpu_before = {name: [cpus.process_cpu_s(p) for p in ps] for name, ps in pids.items()}
        loads = {
            f"{name}.GetCreditCost.hit.x{n}": Load(
                Call(server.target, method, requests, channels=n // CLIENT_PROCESSES),
                n,
                server_pids=pids[name],
            )
            for n in IN_FLIGHT
            for name, server in servers.items()
        }
        for figure in bench.compare(loads).values():
            group.add(figure)
        for name, ps in pids.items():
            used = [cpus.process_cpu_s(p) - before for p, before in zip(ps, cpu_before[name], strict=True)]
            group.values[f"{name}.cpu_split"] = split(used)
            group.values[f"{name}.rss_bytes_per_worker"] = [cpus.rss_bytes(p) for p in ps]
            if servers[name].count > 1:
                group.values[f"{name}.supervisor_rss_bytes"] = cpus.rss_bytes(servers[name].supervisor_pid)
    _summaries(group)
    return group


def _summaries(group: Group) -> None:
    f = group.figures
    v = group.values
    for n in IN_FLIGHT:
        for cores in ("core0", "cores01"):
            one, two = f[f"w1.{cores}.GetCreditCost.hit.x{n}"], f[f"w2.{cores}.GetCreditCost.hit.x{n}"]
            per_cpu = ratio(two.notes.get(_PER_CPU, 0), one.notes.get(_PER_CPU, 0))
            v[f"2_vs_1.{cores}.x{n}"] = (
                f"throughput {ratio(two.summary.throughput_per_s, one.summary.throughput_per_s)}×, "
                f"p50 {ratio(two.summary.p50_us, one.summary.p50_us)}×, "
                f"p99 {ratio(two.summary.p99_us, one.summary.p99_us)}×, "
                f"calls per server CPU second {per_cpu}×"
            )
    for cores in ("core0", "cores01"):
        one = v[f"w1.{cores}.rss_bytes_per_worker"]
        two = v[f"w2.{cores}.rss_bytes_per_worker"]
        if one and two:
            # the whole set: with 2 workers the supervisor is a process of its own too
            supervisor = v.get(f"w2.{cores}.supervisor_rss_bytes", 0)
            v[f"rss_bytes_2_minus_1_workers.{cores}"] = sum(two) + supervisor - sum(one)
