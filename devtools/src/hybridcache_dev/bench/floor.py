"""The floor: what the service can never beat, measured on this machine in this run.

    server-model   empty unary RPC: sync grpc.server (4 threads) vs grpc.aio, 1 and 16 in flight
    redis          a raw GET; a bare TCP round trip between two processes (this host's cost of
                   waking a process on the other side of loopback, which every RPC pays);
                   PUBLISH -> subscriber (measured in the propagation group)
    wrapper        a direct httpx.Client GET to the development Wrapper

(The empty RPC on the Service's own stack, behind its gate, is measured next to the
service RPCs in `service.py`, so the ratios there come from one run.)
"""

from __future__ import annotations

import multiprocessing
import socket
from multiprocessing.connection import Connection
from typing import Any

import httpx

from hybridcache_dev.bench import cpus
from hybridcache_dev.bench.consumers import Subscribe, Subscribers, delivery_latencies, paced_publish
from hybridcache_dev.bench.loadgen import Call
from hybridcache_dev.bench.servers import EMPTY_METHOD, BenchServer
from hybridcache_dev.bench.stats import Summary, summarize
from hybridcache_dev.bench.suite import Bench, Figure, Group, Load, pooled, timed_samples
from hybridcache_dev.stack.redis_process import RedisProcess

PUBLISH_RATE = 1000.0
# Raw Redis, 100 subscribers at 1,000/s, is 100k deliveries/s: more than one Python process
# on the load core can read (redis-py parses each message; measured: it falls seconds behind),
# so that floor figure publishes at 100/s and says so. The WatchChanges streams are measured
# at 1,000/s for every count (propagation.WATCH_RATES): batches make that readable.
SUBSCRIBER_RATES: dict[int, float] = {1: PUBLISH_RATE, 10: PUBLISH_RATE, 100: PUBLISH_RATE / 10}


def server_model(bench: Bench) -> Group:
    group = Group("server-model")
    with BenchServer("sync-bare") as sync, BenchServer("aio-bare") as aio:
        loads = {
            f"{kind}.empty.x{n}": Load(Call(server.target, EMPTY_METHOD), n, server.pid)
            for kind, server in (("sync", sync), ("aio", aio))
            for n in (1, 16)
        }
        for figure in bench.compare(loads).values():
            group.add(figure)
    sync16 = group.figures["sync.empty.x16"].summary.throughput_per_s
    aio16 = group.figures["aio.empty.x16"].summary.throughput_per_s
    group.values["chosen"] = "sync" if sync16 >= aio16 else "aio"
    return group


def _summary_of_loop(samples: list[int]) -> Summary:
    # One caller in a loop: throughput is calls per second of time spent in calls.
    return summarize(samples, seconds=sum(samples) / 1e9)


def redis_floor(bench: Bench, redis: RedisProcess) -> Group:
    group = Group("redis")
    plan = bench.plan
    client = redis.client()
    client.set("bench:key", b"x" * 16)
    samples = [
        timed_samples(lambda: client.get("bench:key"), count=plan.max_calls, warmup=500)
        for _ in range(plan.runs)
    ]
    runs = [_summary_of_loop(run) for run in samples]
    group.add(Figure("redis.get.x1", pooled(samples, runs), runs, {"in_flight": 1}))
    client.close()
    group.add(tcp_round_trip_figure(bench))
    # PUBLISH -> subscribe is measured in the propagation group, side by side with WatchChanges.
    return group


def tcp_round_trip_figure(bench: Bench) -> Figure:
    """One byte to an echo process on the server core and back, TCP_NODELAY, over loopback:
    the least any request/response between two processes costs on this host."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    echo = ctx.Process(target=_echo_server, args=(child,), daemon=True)
    echo.start()
    try:
        port = parent.recv()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def round_trip() -> None:
                sock.sendall(b"x")
                if not sock.recv(1):
                    raise ConnectionError("echo server closed")

            samples = [
                timed_samples(round_trip, count=bench.plan.max_calls, warmup=500)
                for _ in range(bench.plan.runs)
            ]
    finally:
        echo.terminate()
        echo.join(5)
    runs = [_summary_of_loop(run) for run in samples]
    return Figure("tcp.round-trip.x1", pooled(samples, runs), runs, {"in_flight": 1})


def _echo_server(conn: Connection) -> None:
    cpus.pin(cpus.SERVER_CPU)
    with socket.create_server(("127.0.0.1", 0)) as server:
        conn.send(server.getsockname()[1])
        peer, _ = server.accept()
        with peer:
            peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := peer.recv(64):
                peer.sendall(data)


def pubsub_figure(bench: Bench, redis: RedisProcess, subscribers: int, rate: float) -> Figure:
    """PUBLISH -> every subscriber's receive, at `rate`; p99 to the last subscriber."""
    count = _publish_count(bench, subscribers, rate)
    runs_every: list[Summary] = []
    runs_last: list[Summary] = []
    samples_every: list[list[int]] = []
    samples_last: list[list[int]] = []
    lost_total = 0
    client = redis.client()
    for run in range(bench.plan.runs):
        channel = f"bench:rtt:{subscribers}:{run}"
        spec = Subscribe(
            "redis", subscribers, count, timeout_s=count / rate + 20, redis_port=redis.port, channel=channel
        )
        subs = Subscribers(spec)
        subs.wait_ready()
        sent = paced_publish(lambda seq, ch=channel: client.publish(ch, str(seq)), count, rate)
        every, last, lost = delivery_latencies(sent, subs.results())
        lost_total += lost
        seconds = count / rate
        runs_every.append(summarize(every, seconds=seconds, errors=lost))
        runs_last.append(summarize(last, seconds=seconds, errors=lost))
        samples_every.append(every)
        samples_last.append(last)
    client.close()
    figure = Figure(f"redis.pubsub.subs{subscribers}", pooled(samples_last, runs_last), runs_last)
    figure.notes = {
        "subscribers": subscribers,
        "rate_per_s": rate,
        "messages_per_run": count,
        "latency_is": "publish -> the last subscriber's receive, per message",
        "every_delivery": pooled(samples_every, runs_every).to_json(),
        "percentiles": "over the 3 runs pooled",
        "lost_deliveries": lost_total,
    }
    return figure


def _publish_count(bench: Bench, subscribers: int, rate: float) -> int:
    """Messages per run: 3,400 for one subscriber (>= 10k pooled over 3 runs); with many
    subscribers each message gives that many deliveries, so ~3 s of messages gives >= 10k
    delivery samples (the last-subscriber p99 rests on fewer: the samples column says how many)."""
    if bench.plan.quick:
        return int(rate // 2)
    return 3_400 if subscribers == 1 else int(rate * 3)


def wrapper_floor(
    bench: Bench, wrapper_url: str, headers: dict[str, str], wrapper_pid: int, path: str
) -> Group:
    """A direct httpx.Client GET of one item (the Wrapper on the server core for this figure)."""
    group = Group("wrapper")
    cpus.pin_process_tree(wrapper_pid, cpus.SERVER_CPU)
    try:
        with httpx.Client(base_url=wrapper_url, headers=headers) as http:
            samples = [
                timed_samples(lambda: http.get(path).raise_for_status(), count=_http_count(bench), warmup=200)
                for _ in range(bench.plan.runs)
            ]
    finally:
        cpus.pin_process_tree(wrapper_pid, cpus.LOAD_CPU)
    runs = [_summary_of_loop(run) for run in samples]
    notes = {"in_flight": 1, "path": path, "percentiles": "over the 3 runs pooled"}
    group.add(Figure("wrapper.http-get.x1", pooled(samples, runs), runs, notes))
    return group


def _http_count(bench: Bench) -> int:
    return 1000 if bench.plan.quick else 3_400  # x 3 runs pooled: >= 10k samples


def http_get_summary(http: httpx.Client, path: str, count: int) -> Summary:
    return _summary_of_loop(timed_samples(lambda: http.get(path).raise_for_status(), count=count, warmup=50))


def concurrent_http_summary(
    base_url: str, headers: dict[str, str], paths: list[str], *, in_flight: int
) -> Summary:
    """`in_flight` threads sharing one pooled httpx.Client, each GETting its own slice of
    `paths` once: the Wrapper's own latency at that concurrency, without the Service."""
    import threading  # noqa: PLC0415
    import time  # noqa: PLC0415

    latencies: list[int] = []
    lock = threading.Lock()
    share = len(paths) // in_flight
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)

    with httpx.Client(base_url=base_url, headers=headers, limits=limits, timeout=10) as http:

        def worker(index: int) -> None:
            mine = []
            for path in paths[index * share : (index + 1) * share]:
                started = time.perf_counter_ns()
                http.get(path).raise_for_status()
                mine.append(time.perf_counter_ns() - started)
            with lock:
                latencies.extend(mine)

        started = time.monotonic()
        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(in_flight)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        seconds = time.monotonic() - started
    return summarize(latencies, seconds=seconds)


def describe(group: Group) -> dict[str, Any]:
    return {name: figure.to_json() for name, figure in group.figures.items()}
