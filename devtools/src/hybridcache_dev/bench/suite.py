"""What every benchmark shares: the run settings, the load pool, and where figures go.

A *figure* is one measured thing (median of `runs` runs); a *target* is one line of issue 7
checked against figures of the same run. Comparisons are measured interleaved (A, B, A, B,
...) so that a noisy neighbour on this shared machine hits both sides alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hybridcache_dev.bench import cpus
from hybridcache_dev.bench.loadgen import START_SLACK_S, Call, LoadPool, LoadResult
from hybridcache_dev.bench.stats import Summary, median_of, summarize


@dataclass(frozen=True)
class Plan:
    runs: int = 3
    warmup_s: float = 0.5
    max_s: float = 7.5  # a run stops after this long ...
    # ... or after this many calls, whichever comes first: 3 runs pool >= 10k samples, which is
    # what each figure's p50 / p99 are taken over (a 1-in-flight call takes ~1 ms on this host,
    # so 10k samples in *each* of 3 runs would cost 30 s a figure and the suite its budget)
    max_calls: int = 3_400
    quick: bool = False

    @classmethod
    def quick_plan(cls) -> Plan:
        return cls(runs=1, warmup_s=0.2, max_s=1.0, max_calls=2_000, quick=True)


@dataclass
class Figure:
    name: str
    summary: Summary
    runs: list[Summary]
    notes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        # The distribution of the figure only, not of each run: the JSON is committed.
        quantiles = self.summary.quantiles_json()
        return {
            "name": self.name,
            **self.summary.to_json(),
            **({"quantiles_us": quantiles} if quantiles else {}),
            "runs": [r.to_json() for r in self.runs],
            "notes": self.notes,
        }


@dataclass
class Target:
    name: str
    wanted: str
    measured: str
    met: bool | None  # None: not measured
    why: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "wanted": self.wanted,
            "measured": self.measured,
            "met": self.met,
            "why": self.why,
        }


@dataclass
class Group:
    """The figures, targets and free-form values one benchmark module produced."""

    name: str
    figures: dict[str, Figure] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # figures that could not be measured, and why
    started: float = field(default_factory=time.time)
    load_at_start: float = field(default_factory=cpus.load_average)

    def add(self, figure: Figure) -> Figure:
        self.figures[figure.name] = figure
        return figure

    def target(self, name: str, wanted: str, measured: str, met: bool | None, why: str = "") -> None:
        self.targets.append(Target(name, wanted, measured, met, why))


@dataclass(frozen=True)
class Load:
    """One side of a comparison: a call at a concurrency, against a server process."""

    call: Call
    in_flight: int
    server_pid: int | None = None
    # A server of several processes (`--workers`): its CPU is the sum over these pids (then
    # `server_pid` is not read; server CPU may exceed 1.0).
    server_pids: tuple[int, ...] = ()


class Bench:
    def __init__(self, plan: Plan, pool: LoadPool) -> None:
        self.plan = plan
        self.pool = pool

    def compare(self, loads: Mapping[str, Load]) -> dict[str, Figure]:
        """Each load `plan.runs` times, interleaved, each round in a rotated order. A figure's
        p50 / p99 / max are over the samples of all its runs pooled (>= 10k); throughput is
        the median run's."""
        runs: dict[str, list[tuple[LoadResult, float]]] = {name: [] for name in loads}
        names = list(loads)
        for run in range(self.plan.runs):
            for name in rotated(names, run, self.plan.runs):
                runs[name].append(self._one(loads[name]))
        figures = {}
        for name, results in runs.items():
            summaries = [r.summary for r, _ in results]
            server_cpu = sorted(cpu for _, cpu in results)[len(results) // 2]
            client_cpu = sorted(r.client_cpu for r, _ in results)[len(results) // 2]
            figure = Figure(name, pooled([r.latencies_ns for r, _ in results], summaries), summaries)
            figure.notes = {
                "in_flight": loads[name].in_flight,
                "client_processes": results[0][0].processes,
                "server_cpu": server_cpu,  # fraction of the server core busy while measuring
                "client_cpu": client_cpu,  # fraction of the load core each client process used
                "errors_seen": sorted({e for r, _ in results for e in r.errors_seen})[:3],
            }
            if server_cpu > 0:
                figure.notes["calls_per_server_cpu_s"] = round(figure.summary.throughput_per_s / server_cpu)
            figures[name] = figure
        return figures

    def _one(self, load: Load) -> tuple[LoadResult, float]:
        pids = load.server_pids or ((load.server_pid,) if load.server_pid else ())
        cpu_before = sum(cpus.process_cpu_s(pid) for pid in pids)
        wall_before = time.monotonic()
        result = self.pool.run(
            load.call,
            in_flight=load.in_flight,
            warmup_s=self.plan.warmup_s,
            duration_s=self.plan.max_s,
            max_calls=self.plan.max_calls,
        )
        wall = time.monotonic() - wall_before - START_SLACK_S  # the server idles during the slack
        cpu = sum(cpus.process_cpu_s(pid) for pid in pids) - cpu_before
        server_cpu = round(cpu / wall, 2) if pids else 0.0
        return result, server_cpu


def rotated(names: Sequence[str], run: int, runs: int) -> list[str]:
    """The order of round `run` of `runs`: each round starts at a different name, so that no
    figure always runs first (after a pause) or last."""
    start = run * len(names) // runs
    return [*names[start:], *names[:start]]


def timed_samples(fn: Callable[[], object], *, count: int, warmup: int) -> list[int]:
    """Latency (ns) of `count` calls of `fn` in this thread, after `warmup` unmeasured ones."""
    for _ in range(warmup):
        fn()
    clock = time.perf_counter_ns
    out = []
    for _ in range(count):
        started = clock()
        fn()
        out.append(clock() - started)
    return out


def pooled(runs: Sequence[Sequence[int]], summaries: Sequence[Summary]) -> Summary:
    """p50 / p99 / max over the samples of all runs pooled (>= 10k together), throughput and
    errors the median run's. Every loaded figure is summarised so; the per-run summaries
    stay in the JSON, so run-to-run spread remains visible."""
    merged = [sample for run in runs for sample in run]
    middle = median_of(summaries)
    whole = summarize(merged, seconds=1.0)
    return Summary(
        len(merged), whole.p50_us, whole.p99_us, whole.max_us, middle.throughput_per_s, middle.errors,
        quantiles_us=whole.quantiles_us,  # the pooled samples' distribution
    )  # fmt: skip
