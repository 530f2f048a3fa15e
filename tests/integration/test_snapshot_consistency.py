"""Snapshot + watch while changes flow: several snapshots taken at random moments during a
stream of writes, each followed by WatchChanges from its token. Every replica must end equal
to the Wrapper's truth, and per key it must see the versions after its snapshot's exactly
once each, in order (the Wrapper bumps a version by 1 per change): no gap, no duplicate."""

from __future__ import annotations

import queue
import random
import threading
import time
from typing import Any

import httpx
import pytest

from hybridcache.server.app import Service
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(120)
CODES = [f"crm.consistency.op{i}" for i in range(8)]
WRITE_SECONDS = 4.0
SNAPSHOTS = 6


class Replica:
    """One consumer: a snapshot of the tenant's credit costs, then its watch."""

    def __init__(self, stub: pb_grpc.HybridCacheStub) -> None:
        pages = list(
            stub.ListSnapshot(
                pb.ListSnapshotRequest(tenant_id="acme", kinds=[pb.KIND_CREDIT_COSTS]), timeout=20
            )
        )
        self.values = {i.key: (i.version, i.credit_cost.cost.value) for p in pages for i in p.items}
        self.snapshot_versions = {key: version for key, (version, _) in self.values.items()}
        self.delivered: dict[str, list[int]] = {}
        self.resyncs = 0
        self.events: queue.Queue[pb.WatchChangesResponse] = queue.Queue()
        request = pb.WatchChangesRequest(
            tenant_ids=["acme"], kinds=[pb.KIND_CREDIT_COSTS], resume_token=pages[-1].resume_token
        )
        self._call = stub.WatchChanges(request, timeout=100)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self._call:
                self.events.put(message)
        except Exception:  # noqa: S110 (cancelled at the end)
            pass

    def drain(self) -> None:
        while True:
            try:
                message = self.events.get_nowait()
            except queue.Empty:
                return
            which = message.WhichOneof("message")
            if which == "resync_required":
                self.resyncs += 1
            elif which == "change":
                event = message.change
                key = event.keys[0]
                self.delivered.setdefault(key, []).append(event.version)
                self.values[key] = (event.version, event.credit_cost.cost.value)

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(5)


def truth(dev_wrapper: Any) -> dict[str, tuple[int, str]]:
    url = f"{dev_wrapper.url}/api/tenants/acme/snapshots/credit-costs"
    items = httpx.get(url, headers=dev_wrapper.headers, timeout=10).json()["items"]
    return {i["operationCode"]: (i["version"], i["cost"]) for i in items}


def test_snapshots_taken_while_changes_flow_miss_nothing_and_repeat_nothing(
    service: Service, stub: pb_grpc.HybridCacheStub, dev_wrapper: Any
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    stop = threading.Event()
    written = [0]

    def write() -> None:
        with WrapperAdmin(dev_wrapper.url, dev_wrapper.token) as admin:
            while not stop.is_set():
                admin.put_cost("acme", rng.choice(CODES), f"{rng.randrange(1, 10_000)}.5")
                written[0] += 1

    writer = threading.Thread(target=write, daemon=True)
    replicas: list[Replica] = []
    writer.start()
    try:
        started = time.monotonic()
        for _ in range(SNAPSHOTS):
            threading.Event().wait(rng.uniform(0, WRITE_SECONDS / SNAPSHOTS))  # a random moment
            replicas.append(Replica(stub))
        stop.wait(max(0.0, WRITE_SECONDS - (time.monotonic() - started)))
    finally:
        stop.set()
        writer.join(10)
    try:
        expected = truth(dev_wrapper)

        def converged() -> bool:
            for replica in replicas:
                replica.drain()
            return all(
                {k: v for k, v in r.values.items() if k in CODES}
                == {k: expected[k] for k in CODES if k in expected}
                for r in replicas
            )

        wait_for(converged, timeout=30, what=f"every replica to equal the Wrapper's truth (seed {seed})")
        assert written[0] > 20, f"only {written[0]} changes were written"
        for index, replica in enumerate(replicas):
            assert replica.resyncs == 0, f"replica {index} was told to resync (seed {seed})"
            for key, versions in replica.delivered.items():
                first = replica.snapshot_versions.get(key, 0) + 1
                assert versions == list(range(first, first + len(versions))), (
                    f"replica {index}, {key}: versions after snapshot v{first - 1} came as {versions} "
                    f"(a gap or a duplicate; seed {seed})"
                )
    finally:
        for replica in replicas:
            replica.close()
