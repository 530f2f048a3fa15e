"""The load generator: N spawned client processes, each with M threads making blocking calls.

Requests are serialized once up front and sent as raw bytes on a generic
`channel.unary_unary(method)` without (de)serializers, so the client does the same work
for the empty RPC and for a real one: differences in the figures are the server's.

All processes start their warm-up at the same `time.monotonic_ns()` instant (CLOCK_MONOTONIC
is system-wide on Linux), measure for `duration_s`, and return every latency
(`perf_counter_ns`, an `array('q')`) to the parent. Each loop is bounded both by time and by
a call count. Processes are kept alive between runs (`LoadPool`), so each run pays no
start-up and the channels stay connected.
"""

from __future__ import annotations

import array
import contextlib
import multiprocessing
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from hybridcache_dev.bench import cpus
from hybridcache_dev.bench.stats import Summary, summarize

START_SLACK_S = 0.2  # time for every process to receive the job before it starts
_START_SLACK_NS = int(START_SLACK_S * 1e9)


@dataclass(frozen=True)
class Call:
    """One kind of call: where, which method, and the requests to cycle through."""

    target: str
    method: str  # "/package.Service/Method"
    requests: tuple[bytes, ...] = (b"",)
    metadata: tuple[tuple[str, str], ...] = ()
    timeout_s: float = 5.0
    # A mixed workload: request i goes to `methods[method_of[i]]` (then `method` is unused).
    methods: tuple[str, ...] = ()
    method_of: bytes = b""
    # Connections per client process: 1 (the default) shares one; N gives each caller thread
    # channel `thread % N`, each its own connection (a local subchannel pool), so that a
    # SO_REUSEPORT server (`--workers`) sees as many connections as callers to spread.
    channels: int = 1


@dataclass(frozen=True)
class _Job:
    call: Call
    threads: int
    offset: int  # where this process starts in `requests`
    stride: int  # how far apart its threads start: callers spread evenly over `requests`
    start_ns: int
    warmup_s: float
    duration_s: float
    max_calls: int  # per thread


@dataclass
class _Result:
    latencies: bytes = b""
    errors: int = 0
    measured_s: float = 0.0
    cpu_s: float = 0.0
    error_text: str = ""


@dataclass
class LoadResult:
    summary: Summary
    client_cpu: float  # client CPU seconds / (wall seconds x processes): near 1.0 means the client limited
    processes: int
    in_flight: int
    errors_seen: list[str] = field(default_factory=list)
    latencies_ns: array.array[int] = field(default_factory=lambda: array.array("q"))  # every sample


def _caller(job: _Job, stubs_by_channel: list[list[Any]], index: int, out: list[_Result]) -> None:
    import grpc  # noqa: PLC0415 (imported in the spawned child only)

    call = job.call
    stubs = stubs_by_channel[index % len(stubs_by_channel)]
    requests = call.requests
    n = len(requests)
    # Callers start evenly spread over the requests, so with enough distinct requests no two
    # callers ever send the same one (the miss benchmark relies on it: each key read once).
    i = job.offset + index * job.stride
    latencies = array.array("q")
    errors = 0
    error_text = ""
    measure_from = job.start_ns + int(job.warmup_s * 1e9)
    end = measure_from + int(job.duration_s * 1e9)
    last = measure_from
    metadata = call.metadata or None
    clock = time.monotonic_ns
    method_of = call.method_of or bytes(n)
    while len(latencies) < job.max_calls:
        started = clock()
        if started >= end:
            break
        try:
            stubs[method_of[i % n]](requests[i % n], timeout=call.timeout_s, metadata=metadata)
        except grpc.RpcError as exc:
            if started >= measure_from:
                errors += 1
                error_text = f"{exc.code().name}: {exc.details()}"
            i += 1
            continue
        finished = clock()
        if started >= measure_from:
            latencies.append(finished - started)
            last = finished
        i += 1
    out[index] = _Result(latencies.tobytes(), errors, (last - measure_from) / 1e9, error_text=error_text)


def _worker_main(conn: Connection) -> None:
    import grpc  # noqa: PLC0415

    cpus.pin(cpus.LOAD_CPU)
    channels: dict[tuple[str, int], list[Any]] = {}
    while True:
        job: _Job | None = conn.recv()
        if job is None:
            break
        key = (job.call.target, job.call.channels)
        opened = channels.get(key)
        if opened is None:
            opened = channels[key] = _open_channels(job.call.target, job.call.channels)
        stubs: list[list[grpc.UnaryUnaryMultiCallable[bytes, bytes]]] = [
            [channel.unary_unary(m) for m in (job.call.methods or (job.call.method,))] for channel in opened
        ]
        results: list[_Result] = [_Result() for _ in range(job.threads)]
        cpu_before = time.process_time()
        threads = [
            threading.Thread(target=_caller, args=(job, stubs, t, results), daemon=True)
            for t in range(job.threads)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(job.warmup_s + job.duration_s + 60)
        merged = array.array("q")
        for result in results:
            merged.frombytes(result.latencies)
        conn.send(
            _Result(
                merged.tobytes(),
                sum(r.errors for r in results),
                max(r.measured_s for r in results),
                time.process_time() - cpu_before,
                next((r.error_text for r in results if r.error_text), ""),
            )
        )
    for opened in channels.values():
        for channel in opened:
            channel.close()


def _open_channels(target: str, count: int) -> list[Any]:
    import grpc  # noqa: PLC0415

    # Two channels with the same arguments share one connection (gRPC's global subchannel
    # pool) unless each has a pool of its own.
    options = [("grpc.use_local_subchannel_pool", 1)] if count > 1 else []
    opened = [grpc.insecure_channel(target, options=options) for _ in range(count)]
    for channel in opened:
        grpc.channel_ready_future(channel).result(timeout=10)
    return opened


class LoadPool:
    """Client processes kept alive across runs. Use as a context manager."""

    def __init__(self, processes: int = 2) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for _ in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    def run(
        self,
        call: Call,
        *,
        in_flight: int,
        warmup_s: float,
        duration_s: float,
        max_calls: int = 1_000_000,
    ) -> LoadResult:
        """`in_flight` callers spread over the pool's processes; latencies of all of them."""
        used = min(in_flight, len(self._conns))
        shares = [in_flight // used + (1 if p < in_flight % used else 0) for p in range(used)]
        start_ns = time.monotonic_ns() + _START_SLACK_NS
        stride = max(1, len(call.requests) // in_flight)
        first = 0
        for p, threads in enumerate(shares):
            self._conns[p].send(
                _Job(
                    call,
                    threads,
                    first * stride,
                    stride,
                    start_ns,
                    warmup_s,
                    duration_s,
                    max(1, max_calls // in_flight),
                )
            )
            first += threads
        results: list[_Result] = [self._conns[p].recv() for p in range(used)]
        latencies = array.array("q")
        for result in results:
            latencies.frombytes(result.latencies)
        measured = max(r.measured_s for r in results) or duration_s
        wall = warmup_s + measured
        errors = sum(r.errors for r in results)
        if not latencies:
            raise RuntimeError(f"no call succeeded: {[r.error_text for r in results if r.error_text][:3]}")
        return LoadResult(
            summary=summarize(latencies, seconds=measured, errors=errors),
            client_cpu=round(sum(r.cpu_s for r in results) / (wall * used), 2),
            processes=used,
            in_flight=in_flight,
            errors_seen=[r.error_text for r in results if r.error_text],
            latencies_ns=latencies,
        )

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(None)
        for proc in self._procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        for conn in self._conns:
            conn.close()

    def __enter__(self) -> LoadPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serialized(messages: Sequence[Any]) -> tuple[bytes, ...]:
    """Protobuf messages as the raw bytes a generic call sends."""
    return tuple(m.SerializeToString() for m in messages)
