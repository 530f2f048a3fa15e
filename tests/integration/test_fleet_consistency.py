"""Snapshot + watch across a fleet while changes flow at ~1,000/s (durable mode, shared key).

Seeded random: consumers take a ListSnapshot from a random replica at a random moment,
watch from its token on a random replica, and move their streams between replicas at
random moments, resuming from their last token. Writers change acme's credit costs through
the development Wrapper (each writer owns its keys, so a key's changes are published in
order and its version goes up by 1 per change). At the end every consumer equals the
Wrapper's truth; per key the versions after its snapshot arrive once each, in order (no gap,
no duplicate), with no RESYNC_REQUIRED. Variants also start a replica in the middle and
move consumers onto it at once: a position older than that replica's start is replayed from
the Redis stream (a catch-up sends each key changed since once, at its latest value: there a
version may skip, never repeat or go back); those are expected to fail now and then (a known
defect, FRESH_REPLICA_DEFECT below).

Quick variants in the default run (3 s of writes, 6 consumers); 30 s and 20 consumers marked
`slow`. The rate aimed at is 1,000 changes/s; the development Wrapper's admin writes (HTTP +
SQLite + publish, one process) and the test process (three services, writers and consumers
under one GIL) cap it: 300-720/s here with two replicas, ~250/s with three (printed by each run).
"""

from __future__ import annotations

import base64
import queue
import random
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from hybridcache.server.app import Service
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.stack.redis_process import RedisProcess
from hybridcache_dev.wrapper import launch
from tests.conftest import WRAPPER_TOKEN, service_settings
from tests.helpers import wait_for

KEY = base64.b64encode(secrets.token_bytes(16)).decode()
WRITERS = 12
KEYS_PER_WRITER = 3
TARGET_RATE = 1_000.0  # changes a second, all writers together (the Wrapper's admin writes cap it)
LATE_MOVERS = 4  # consumers moved onto the replica started in the middle, at once


@dataclass
class Consumer:
    """One consumer's replica of acme's credit costs: a snapshot, then its stream (moved)."""

    index: int
    values: dict[str, tuple[int, str]] = field(default_factory=dict)  # key -> (version, cost)
    last_version: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    resyncs: list[str] = field(default_factory=list)
    token: str = ""
    token_at: float = 0.0  # when `token` arrived (monotonic)
    may_skip: set[str] = field(default_factory=set)  # keys a catch-up may bring at a later version
    moves: int = 0
    watches: list[str] = field(default_factory=list)
    catch_ups: int = 0  # moves onto a replica started after the consumer's position
    history: dict[str, list[str]] = field(default_factory=dict)  # key -> its last deliveries (for a failure)
    _call: Any = None
    _thread: threading.Thread | None = None
    _messages: queue.Queue[tuple[int, int, pb.WatchChangesResponse]] = field(default_factory=queue.Queue)
    _at: str = ""

    def snapshot(self, stub: pb_grpc.HybridCacheStub) -> None:
        pages = list(
            stub.ListSnapshot(
                pb.ListSnapshotRequest(tenant_id="acme", kinds=[pb.KIND_CREDIT_COSTS]), timeout=20
            )
        )
        for page in pages:
            for item in page.items:
                self.values[item.key] = (item.version, item.credit_cost.cost.value)
                self.last_version[item.key] = item.version
        self.token, self.token_at = pages[-1].resume_token, time.monotonic()

    def watch(self, stub: pb_grpc.HybridCacheStub, *, catch_up: bool, label: str = "") -> None:
        """Open the stream from the current token (`catch_up`: the replica started after it)."""
        self.watches.append(f"{label} catch_up={catch_up} token={self.token[:20]}")
        self.may_skip = set(self.values) if catch_up else set()
        request = pb.WatchChangesRequest(
            tenant_ids=["acme"], kinds=[pb.KIND_CREDIT_COSTS], resume_token=self.token, max_batch=256
        )
        self._call = stub.WatchChanges(request, timeout=300)
        self._thread = threading.Thread(target=self._read, args=(self._call, len(self.watches)), daemon=True)
        self._thread.start()

    @property
    def watching(self) -> bool:
        return self._call is not None

    def stop_watching(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._thread is not None:
            self._thread.join(10)
        self._call = self._thread = None
        self.drain()

    def _read(self, call: Any, watch_no: int) -> None:
        try:
            for n, message in enumerate(call):
                self._messages.put((watch_no, n, message))
        except grpc.RpcError:
            pass  # cancelled by a move or at the end

    def drain(self) -> None:
        while True:
            try:
                watch_no, n, message = self._messages.get_nowait()
            except queue.Empty:
                return
            self._at = f"watch {watch_no} msg {n} {self.watches[watch_no - 1]}"
            which = message.WhichOneof("message")
            if which == "resync_required":
                self.resyncs.append(message.resync_required.reason)
                self.token = message.resync_required.resume_token
            elif which == "progress":
                self.token, self.token_at = message.progress.resume_token, time.monotonic()
            elif which in ("change", "changes"):
                events = [message.change] if which == "change" else list(message.changes.events)
                for event in events:
                    self._apply(event)

    def _apply(self, event: pb.ChangeEvent) -> None:
        key = event.keys[0]
        held = self.last_version.get(key, 0)
        skip_ok = key in self.may_skip
        where = self._at
        seen = self.history.setdefault(key, [])
        earlier = f"; before: {seen[-3:]}"
        seen.append(f"v{event.version} at {where.split(' catch_up')[0]}")
        if event.version <= held:
            self.problems.append(
                f"{key}: v{event.version} after v{held} (a duplicate or a reorder; {where}{earlier})"
            )
        elif event.version != held + 1 and not skip_ok:
            self.problems.append(f"{key}: v{event.version} after v{held} (a gap; {where}{earlier})")
        self.may_skip.discard(key)
        self.last_version[key] = event.version
        self.values[key] = (event.version, event.credit_cost.cost.value)
        self.token, self.token_at = event.resume_token, time.monotonic()


class Writers:
    """`WRITERS` threads, each owning its keys, paced to `TARGET_RATE` changes a second together."""

    def __init__(self, wrapper_url: str, seed: int) -> None:
        self.url = wrapper_url
        self.seed = seed
        self.written = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(WRITERS)]

    @staticmethod
    def keys(writer: int) -> list[str]:
        return [f"crm.fleetmix.w{writer}.k{i}" for i in range(KEYS_PER_WRITER)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _run(self, writer: int) -> None:
        rng = random.Random(self.seed + writer)
        interval = WRITERS / TARGET_RATE
        next_at = time.monotonic()
        headers = {"Authorization": f"Bearer {WRAPPER_TOKEN}"}
        with httpx.Client(headers=headers, timeout=10) as http:
            while not self._stop.is_set():
                code = rng.choice(self.keys(writer))
                url = f"{self.url}/admin/tenants/acme/credit-costs/{code}"
                http.put(url, json={"cost": f"{rng.randrange(1, 100_000)}.5"}).raise_for_status()
                with self._lock:
                    self.written += 1
                next_at += interval
                pause = next_at - time.monotonic()
                if pause > 0:
                    self._stop.wait(pause)
                else:
                    next_at = time.monotonic()  # behind: do not burst to catch up


def truth(wrapper_url: str) -> dict[str, tuple[int, str]]:
    url = f"{wrapper_url}/api/tenants/acme/snapshots/credit-costs"
    headers = {"Authorization": f"Bearer {WRAPPER_TOKEN}"}
    items = httpx.get(url, headers=headers, timeout=10).json()["items"]
    return {i["operationCode"]: (i["version"], i["cost"]) for i in items}


@pytest.fixture
def fleet_parts(start_service: Any, own_redis: RedisProcess) -> Iterator[tuple[str, Callable[[], Service]]]:
    with tempfile.TemporaryDirectory(prefix="hybridcache-fleetmix-") as tmp:
        wrapper = launch(
            own_redis.url, token=WRAPPER_TOKEN, db_path=str(Path(tmp) / "w.db"), publish_mode="both"
        )

        def start() -> Service:
            settings = service_settings(
                wrapper.url, own_redis.url, event_mode="stream", resume_token_key=KEY, watch_heartbeat_s=0.2
            )
            service: Service = start_service(settings)
            wait_for(lambda: service.freshness() == "live", timeout=20, what="stream reader live")
            wait_for(lambda: not service.feed.ingestor.resync_outstanding, timeout=20, what="initial resync")
            return service

        try:
            yield wrapper.url, start
        finally:
            wrapper.stop()


class Replicas:
    """The replicas started so far, their stubs, and when each was started."""

    def __init__(self, start: Callable[[], Service]) -> None:
        self._start = start
        self.servers: list[Service] = []
        self.stubs: list[pb_grpc.HybridCacheStub] = []
        self.started_at: list[float] = []
        self._channels: list[grpc.Channel] = []

    def add(self) -> int:
        started = time.monotonic()  # before: a token older than this is older than its floor
        server = self._start()
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        self.servers.append(server)
        self._channels.append(channel)
        self.stubs.append(pb_grpc.HybridCacheStub(channel))
        self.started_at.append(started)
        return len(self.servers) - 1

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


def seed_keys(wrapper_url: str) -> list[str]:
    """Every key exists before the run, so every snapshot lists it."""
    keys = [code for writer in range(WRITERS) for code in Writers.keys(writer)]
    with httpx.Client(headers={"Authorization": f"Bearer {WRAPPER_TOKEN}"}, timeout=10) as http:
        for code in keys:
            http.put(f"{wrapper_url}/admin/tenants/acme/credit-costs/{code}", json={"cost": "1.5"})
    return keys


def move_onto_a_new_replica(replicas: Replicas, people: list[Consumer]) -> None:
    """Stop some streams, start a replica, resume them there: their positions are from
    before its start, so its ring starts after them (replayed from the Redis stream)."""
    movers = [p for p in people if p.watching][:LATE_MOVERS]
    for mover in movers:
        mover.stop_watching()
    late = replicas.add()
    for mover in movers:
        mover.moves += 1
        mover.catch_ups += 1
        mover.watch(replicas.stubs[late], catch_up=True, label=f"on {late} (new)")


def run_fleet_mix(
    wrapper_url: str,
    start: Callable[[], Service],
    *,
    seconds: float,
    consumers: int,
    moves: int,
    late_replica: bool,
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    replicas = Replicas(start)
    replicas.add()
    replicas.add()
    keys = seed_keys(wrapper_url)
    writers = Writers(wrapper_url, seed)
    people = [Consumer(n) for n in range(consumers)]
    # The plan: a random start moment per consumer, `moves` random moves each, and a replica
    # started in the middle.
    plan: list[tuple[float, Consumer | None]] = [(seconds * 0.5, None)] if late_replica else []
    for person in people:
        plan.append((rng.uniform(0, seconds * 0.3), person))
        plan.extend((rng.uniform(seconds * 0.3, seconds), person) for _ in range(moves))
    plan.sort(key=lambda step: step[0])
    writers.start()
    began = time.monotonic()
    try:
        for at, step in plan:
            time.sleep(max(0.0, began + at - time.monotonic()))
            if step is None:
                move_onto_a_new_replica(replicas, people)
                continue
            person = step
            if person.watching:
                person.stop_watching()
                person.moves += 1
            else:
                person.snapshot(replicas.stubs[rng.randrange(len(replicas.servers))])
            target = rng.randrange(len(replicas.servers))
            catch_up = person.token_at < replicas.started_at[target]
            person.catch_ups += catch_up
            person.watch(replicas.stubs[target], catch_up=catch_up, label=f"on {target}")
        time.sleep(max(0.0, began + seconds - time.monotonic()))
    finally:
        writers.stop()
    elapsed = time.monotonic() - began
    try:
        check(wrapper_url, keys, people, seed)
        catch_ups = sum(p.catch_ups for p in people)
        print(
            f"\nfleet mix: {writers.written} changes in {elapsed:.1f} s ({writers.written / elapsed:.0f}/s), "
            f"{consumers} consumers, {sum(p.moves for p in people)} moves ({catch_ups} replayed from the "
            f"Redis stream), {len(replicas.servers)} replicas (seed {seed})"
        )
        assert catch_ups > 0 or not late_replica, (
            "no consumer moved onto the new replica from before its start"
        )
        assert writers.written > 30 * seconds, f"only {writers.written} changes written in {elapsed:.1f} s"
    finally:
        for person in people:
            person.stop_watching()
        replicas.close()


def check(wrapper_url: str, keys: list[str], people: list[Consumer], seed: int) -> None:
    expected = truth(wrapper_url)

    def converged() -> bool:
        for person in people:
            person.drain()
        return all({k: p.values.get(k) for k in keys} == {k: expected[k] for k in keys} for p in people)

    wait_for(converged, timeout=60, what=f"every consumer to equal the Wrapper's truth (seed {seed})")
    for person in people:
        assert not person.resyncs, f"consumer {person.index} told to resync: {person.resyncs} (seed {seed})"
        assert not person.problems, f"consumer {person.index}: {person.problems[:5]} (seed {seed})"


# A replica's own reads of the Wrapper (its start-up load, a resync) are ahead of its stream
# reader. Since the end of the stream read after each such read became the replica's floor
# (ChangeHub.settle_at), a resume from before it is a catch-up from the stream: that closed
# most of the misses (old code: 3 of 12 quick runs failed; now 1 of 32), not all: a key can
# still skip a version right after a catch-up (seen once: "v34 after v32"), so these variants
# stay non-strict xfails. docs/ARCHITECTURE.md, "Fleet resume tokens", says what is left.
FRESH_REPLICA_DEFECT = (
    "on a replica started mid-run a key can, rarely, skip a version just after a catch-up "
    "(the replica's own Wrapper reads racing its stream reader)"
)


@pytest.mark.timeout(180)
def test_consumers_moving_across_replicas_while_changes_flow_miss_nothing_and_repeat_nothing(
    fleet_parts: tuple[str, Callable[[], Service]],
) -> None:
    wrapper_url, start = fleet_parts
    run_fleet_mix(wrapper_url, start, seconds=3.0, consumers=6, moves=2, late_replica=False)


@pytest.mark.xfail(reason=FRESH_REPLICA_DEFECT, strict=False)
@pytest.mark.timeout(180)
def test_consumers_moving_onto_a_replica_started_mid_run(
    fleet_parts: tuple[str, Callable[[], Service]],
) -> None:
    wrapper_url, start = fleet_parts
    run_fleet_mix(wrapper_url, start, seconds=3.0, consumers=6, moves=2, late_replica=True)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_consumers_moving_across_replicas_for_30_s(fleet_parts: tuple[str, Callable[[], Service]]) -> None:
    wrapper_url, start = fleet_parts
    run_fleet_mix(wrapper_url, start, seconds=30.0, consumers=20, moves=4, late_replica=False)


@pytest.mark.slow
@pytest.mark.xfail(reason=FRESH_REPLICA_DEFECT, strict=False)
@pytest.mark.timeout(600)
def test_consumers_moving_onto_a_replica_started_mid_run_for_30_s(
    fleet_parts: tuple[str, Callable[[], Service]],
) -> None:
    wrapper_url, start = fleet_parts
    run_fleet_mix(wrapper_url, start, seconds=30.0, consumers=20, moves=4, late_replica=True)
