"""Scenario 5: duplicated, reordered and replayed change notifications at volume
(docs/GUARANTEES.md §2: versions only move forward; a duplicate eventId is applied once).

The Wrapper changes credit costs (each change publishes its notification with a version).
A listener of our own captures every notification it publishes, and a chaos publisher
sends them again on the same Redis, raw:
* duplicates — the same message, same eventId, once or twice more;
* replays — an old message again, as is (same eventId) and with a fresh eventId (so only
  the version can stop it);
* reorders — batches of recent messages, shuffled, with fresh eventIds.

Readers record the version every answer carries, and one WatchChanges stream records the
versions it is sent. Invariants: no reader ever sees a key's version go down, neither does
the stream, and at the end every key equals the Wrapper's value and version.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter, defaultdict

import grpc
import pytest
import redis

from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.wrapper.seed import OPERATION_CODES
from tests.faults.conftest import Figures, Scale, variants
from tests.faults.history import (
    History,
    LoadLoop,
    Request,
    canonical,
    observe,
    version_regressions,
    wait_until,
)
from tests.faults.stack import stack

KEYS = OPERATION_CODES[:10]
TENANT = "acme"


class Capture:
    """Every credit-config-changed message the Wrapper publishes, as raw bytes, in order."""

    def __init__(self, client: redis.Redis) -> None:
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe("crm:*:credit-config-changed")
        self.messages: list[tuple[bytes, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def start(self) -> Capture:
        wait_until(lambda: self.pubsub.subscribed, timeout=5, what="the capture subscription")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.05)
            if message and message["type"] == "pmessage":
                self.messages.append((message["channel"], message["data"]))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()


def _fresh_id(data: bytes) -> bytes:
    """The same message with a new eventId (the id is replaced in the raw text: numbers stay exact)."""
    start = data.index(b'"eventId":"') + len(b'"eventId":"')
    end = data.index(b'"', start)
    return data[:start] + f"chaos-{uuid.uuid4().hex}".encode() + data[end:]


class Chaos:
    """Re-publishes captured messages: duplicates, replays (same and fresh id), shuffled batches."""

    def __init__(self, client: redis.Redis, capture: Capture, seed: int = 5) -> None:
        self.client = client
        self.capture = capture
        self.rng = random.Random(seed)
        self.sent: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def start(self) -> Chaos:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _publish(self, kind: str, channel: bytes, data: bytes) -> None:
        self.client.publish(channel, data)
        self.sent[kind] += 1

    def step(self, seen: int) -> None:
        messages = self.capture.messages[:seen]
        rng = self.rng
        channel, data = messages[-1]
        for _ in range(rng.randint(1, 2)):
            self._publish("duplicate", channel, data)
        old_channel, old_data = messages[rng.randrange(len(messages))]
        self._publish("replay-same-id", old_channel, old_data)
        self._publish("replay-fresh-id", old_channel, _fresh_id(old_data))
        if len(messages) >= 5 and rng.random() < 0.5:
            batch = messages[-5:]
            rng.shuffle(batch)
            for ch, body in batch:
                self._publish("reordered", ch, _fresh_id(body))

    def _run(self) -> None:
        seen = 0
        while not self._stop.is_set():
            available = len(self.capture.messages)
            if available == seen:
                self._stop.wait(0.002)
                continue
            seen += 1
            self.step(seen)


class StreamVersions:
    """One WatchChanges stream; records (key, version) of every ChangeEvent."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        stub = pb_grpc.HybridCacheStub(self.channel)
        request = pb.WatchChangesRequest(tenant_ids=[TENANT], kinds=[pb.KIND_CREDIT_COSTS])
        self.call = stub.WatchChanges(request)
        self.events: list[tuple[str, int, bool]] = []
        self.started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-versions", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for response in self.call:
                self.started.set()
                if response.WhichOneof("message") == "change":
                    change = response.change
                    for key in change.keys:
                        self.events.append((key, int(change.version), bool(change.resync)))
        except grpc.RpcError:
            pass  # cancelled at the end

    def regressions(self) -> list[str]:
        highest: dict[str, int] = defaultdict(int)
        found = []
        for key, version, resync in self.events:
            if resync or version == 0:
                continue
            if version < highest[key]:
                found.append(f"{key}: {highest[key]} then {version}")
            highest[key] = max(highest[key], version)
        return found

    def close(self) -> None:
        self.call.cancel()
        self._thread.join(5)
        self.channel.close()


@pytest.mark.faults
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "scale", variants(Scale("fast", runs=10), Scale("full", runs=100))
)  # rounds of writes
def test_versions_never_go_backwards(scale: Scale, figures: Figures) -> None:
    requests = [Request("credit-cost", TENANT, key) for key in KEYS]
    history = History()
    with stack() as s:
        s.spawn_server()
        raw = s.redis.client(socket_timeout=5)
        capture = Capture(raw).start()
        chaos = Chaos(s.redis.client(socket_timeout=5), capture).start()
        stream = StreamVersions(s.target)
        wait_until(stream.started.is_set, timeout=10, what="the watch stream's first message")
        writes = 0
        max_s = scale.runs * len(KEYS) * 0.1 + 60
        with LoadLoop(s.target, requests, history, workers=4, rate_per_s=400, max_s=max_s) as load:
            for round_ in range(int(scale.runs)):
                for k, key in enumerate(KEYS):
                    s.admin.put_cost(TENANT, key, f"{round_ + 1}.{k:02d}")
                    writes += 1
            wait_until(lambda: len(capture.messages) >= writes, timeout=10, what="every publication captured")
            wait_until(lambda: chaos.sent["duplicate"] >= writes, timeout=30, what="chaos over every message")
            # A last burst of stale replays after the final values are in.
            for _ in range(50):
                chaos.step(len(capture.messages))
            truth = {key: s.admin.item(f"{TENANT}/credit-costs/{key}") for key in KEYS}
            with grpc.insecure_channel(s.target) as channel:
                stub = pb_grpc.HybridCacheStub(channel)

                def settled() -> bool:
                    answers = [observe(stub, r, timeout=2.0) for r in requests]
                    return all(
                        a.ok
                        and a.version == truth[a.request.key]["version"]
                        and a.value == canonical(str(truth[a.request.key]["cost"]))
                        for a in answers
                    )

                wait_until(settled, timeout=15, what="every key to hold the Wrapper's last value and version")
                stats = stub.GetCacheStats(pb.GetCacheStatsRequest(), timeout=2)
            load.stop()
        chaos.stop()
        capture.stop()
        stream.close()
        raw.close()
    regressions = version_regressions(history)
    stream_regressions = stream.regressions()
    figures.record(
        "5-duplicate-reordered-replayed",
        scale.name,
        wrapper_changes=writes,
        chaos_messages=dict(chaos.sent),
        chaos_total=sum(chaos.sent.values()),
        reads=len(history),
        reads_failed=sum(1 for o in history if not o.ok),
        stream_events=len(stream.events),
        version_regressions_reads=len(regressions),
        version_regressions_stream=len(stream_regressions),
        server_events_applied=int(stats.events_applied),
        server_events_rejected=int(stats.events_rejected),
    )
    versioned = sum(1 for o in history if o.ok and o.version > 1)
    assert versioned > len(history) // 2, (
        f"only {versioned} answers carried a version: the check would be vacuous"
    )
    assert not regressions, f"{len(regressions)} reads saw a version go backwards, e.g. {regressions[:3]}"
    assert not stream_regressions, f"the watch stream sent versions going backwards: {stream_regressions[:3]}"
    assert all(o.ok for o in history), f"reads failed: {[o for o in history if not o.ok][:3]}"
