"""The miss path's HTTP client, chosen by figures: the client CPU of one bare GET to the Wrapper.

A spawned child pinned to the server core (core 0, where the Service spends its CPU per
miss) GETs one user profile from the development Wrapper (core 1, no injected latency) in
a loop, one call at a time, with each client in turn (interleaved, each round rotated):

    httpx      httpx.Client (the Service's Wrapper client), one pooled keep-alive connection
    urllib3    urllib3.PoolManager, the connection pool httpx's alternatives build on
    pycurl     one reused pycurl.Curl handle (libcurl), when pycurl is installed

Each figure's `cpu_us_per_call` is the child's process CPU time (user + system) over its
calls: with one thread and nothing else running in the child it is the client's own cost of
a GET, request building to the body read. Next to the service group's
`server_cpu_us_per_call` of a miss (same run) it says how much of a miss is the HTTP client.
"""

from __future__ import annotations

import array
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from hybridcache_dev.bench import cpus
from hybridcache_dev.bench.child import Child, serve_jobs
from hybridcache_dev.bench.stack import TENANTS, set_wrapper_latency
from hybridcache_dev.bench.stats import ratio, summarize
from hybridcache_dev.bench.suite import Bench, Figure, Group, pooled, rotated

CLIENTS = ("httpx", "urllib3", "pycurl")
MISS_FIGURE = "GetUserProfile.miss.wrapper5ms.x16"  # the service group's
PATH = f"/api/tenants/{TENANTS[0]}/users/user-1/profile"
_WARMUP = 200


@dataclass(frozen=True)
class _Spec:
    base_url: str
    headers: dict[str, str]
    path: str


def _httpx(spec: _Spec) -> Callable[[], object]:
    import httpx  # noqa: PLC0415

    client = httpx.Client(base_url=spec.base_url, headers=spec.headers)
    return lambda: client.get(spec.path).raise_for_status()


def _urllib3(spec: _Spec) -> Callable[[], object]:
    import urllib3  # noqa: PLC0415

    manager = urllib3.PoolManager(headers=spec.headers)
    url = spec.base_url + spec.path

    def get() -> object:
        response = manager.request("GET", url)
        if response.status != 200:
            raise RuntimeError(f"GET {url}: HTTP {response.status}")
        return response.data

    return get


def _pycurl(spec: _Spec) -> Callable[[], object]:
    import pycurl  # noqa: PLC0415 (optional: building it needs libcurl's headers)

    handle = pycurl.Curl()
    handle.setopt(pycurl.URL, spec.base_url + spec.path)
    handle.setopt(pycurl.HTTPHEADER, [f"{k}: {v}" for k, v in spec.headers.items()])

    def get() -> object:
        body = io.BytesIO()
        handle.setopt(pycurl.WRITEDATA, body)
        handle.perform()  # the same handle keeps its connection alive between calls
        if handle.getinfo(pycurl.RESPONSE_CODE) != 200:
            raise RuntimeError(f"GET {spec.path}: HTTP {handle.getinfo(pycurl.RESPONSE_CODE)}")
        return body.getvalue()

    return get


_MAKERS: dict[str, Callable[[_Spec], Callable[[], object]]] = {
    "httpx": _httpx,
    "urllib3": _urllib3,
    "pycurl": _pycurl,
}


def _child(spec: _Spec, conn: Connection) -> None:
    cpus.pin(cpus.SERVER_CPU)
    gets: dict[str, Callable[[], object]] = {}

    def setup() -> dict[str, str]:
        missing: dict[str, str] = {}
        for name in CLIENTS:
            try:
                get = _MAKERS[name](spec)
            except ImportError as exc:
                missing[name] = f"not installed: {exc}"
                continue
            for _ in range(_WARMUP):
                get()
            gets[name] = get
        return missing

    def run(job: tuple[str, int]) -> tuple[bytes, float]:
        name, count = job
        get = gets[name]
        clock = time.perf_counter_ns
        latencies = array.array("q")
        cpu_before = time.process_time()
        for _ in range(count):
            started = clock()
            get()
            latencies.append(clock() - started)
        return latencies.tobytes(), time.process_time() - cpu_before

    serve_jobs(conn, setup, run)


def _run(clients: Child, name: str, count: int) -> tuple[list[int], float]:
    raw, cpu_s = clients.ask((name, count))
    samples = array.array("q")
    samples.frombytes(raw)
    return list(samples), cpu_s


def cpu_us_per_call(cpu_s: list[float], calls: list[int]) -> float:
    """The median run's CPU per call, in µs."""
    per_run = sorted(c / n * 1e6 for c, n in zip(cpu_s, calls, strict=True) if n)
    return round(per_run[len(per_run) // 2], 1) if per_run else 0.0


def http_client_group(bench: Bench, wrapper: Any, service: Group | None) -> Group:
    group = Group("http-client")
    count = 1_000 if bench.plan.quick else 2_000  # CPU per call settles in far fewer; the suite's budget
    set_wrapper_latency(wrapper, 0)
    clients = Child(_child, _Spec(wrapper.url, dict(wrapper.headers), PATH), ready_timeout_s=60)
    try:
        for name, why in clients.first.items():
            group.missing.append(f"{name}: {why}")
        names = [n for n in CLIENTS if n not in clients.first]
        samples: dict[str, list[list[int]]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        for run in range(bench.plan.runs):
            for name in rotated(names, run, bench.plan.runs):
                latencies, cpu_s = _run(clients, name, count)
                samples[name].append(latencies)
                cpu[name].append(cpu_s)
    finally:
        clients.close()
    for name in names:
        runs = [summarize(s, seconds=sum(s) / 1e9) for s in samples[name]]
        group.add(
            Figure(
                f"http.{name}.get.x1",
                pooled(samples[name], runs),
                runs,
                {
                    "in_flight": 1,
                    "path": PATH,
                    "client_cpu_us_per_call": cpu_us_per_call(cpu[name], [len(s) for s in samples[name]]),
                    "client_on": "core 0 (the server core), the Wrapper on core 1",
                },
            )
        )
    _miss_target(group, service)
    return group


def _miss_target(group: Group, service: Group | None) -> None:
    httpx_figure = group.figures.get("http.httpx.get.x1")
    miss = service.figures.get(MISS_FIGURE) if service else None
    wanted = "≤ 2× a bare httpx.Client GET's CPU"
    name = "server CPU per miss vs a bare httpx.Client GET"
    if httpx_figure is None or miss is None:
        group.target(name, wanted, "not measured", None, "needs the service group in the same run")
        return
    bare = float(httpx_figure.notes["client_cpu_us_per_call"])
    per_miss = float(miss.notes.get("server_cpu_us_per_call", 0.0))
    r = ratio(per_miss, bare)
    others = ", ".join(
        f"{f.name.split('.')[1]} {f.notes['client_cpu_us_per_call']:,.0f} µs" for f in group.figures.values()
    )
    group.target(name, wanted, f"{r}× ({per_miss:,.0f} vs {bare:,.0f} µs; bare GETs: {others})", r <= 2.0)
