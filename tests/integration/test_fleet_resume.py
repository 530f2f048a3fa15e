"""Durable mode with a shared resume token key: a consumer's stream moves between replicas
reading the same Redis stream and resumes exactly (real Redis, real Wrapper, real servers)."""

from __future__ import annotations

import base64
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from hybridcache.server.app import Service
from hybridcache.server.hub import REASON_OUTSIDE_WINDOW
from hybridcache.server.hub.events import REASON_OTHER_KEY
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin as Admin
from hybridcache_dev.stack.redis_process import RedisProcess
from hybridcache_dev.wrapper import launch
from tests.conftest import WRAPPER_TOKEN, service_settings
from tests.helpers import wait_for
from tests.integration.test_end_to_end import CODES

pytestmark = pytest.mark.timeout(120)

KEY = base64.b64encode(secrets.token_bytes(16)).decode()
OTHER_KEY = base64.b64encode(secrets.token_bytes(16)).decode()


@dataclass
class Seen:
    changes: list[tuple[str, str]] = field(default_factory=list)  # (key, cost)
    resyncs: list[str] = field(default_factory=list)
    token: str = ""


def read(service: Service, token: str, *, until: int, quiet_s: float = 1.0, timeout: float = 20.0) -> Seen:
    """Watch acme's credit costs on `service` from `token` until `until` changes arrived (or
    a resync), then `quiet_s` more to catch extras (duplicates would show there)."""
    seen = Seen(token=token)
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = pb_grpc.HybridCacheStub(channel)
        call = stub.WatchChanges(
            pb.WatchChangesRequest(tenant_ids=["acme"], kinds=[pb.KIND_CREDIT_COSTS], resume_token=token),
            timeout=timeout,
        )
        stop_at: float | None = None
        try:
            for message in call:
                which = message.WhichOneof("message")
                events = (
                    [message.change]
                    if which == "change"
                    else list(message.changes.events)
                    if which == "changes"
                    else []
                )
                for event in events:
                    if event.resync:  # the replica reloaded the kind: a consumer reloads too
                        seen.resyncs.append(f"resync event ({event.event_type})")
                    else:
                        seen.changes.append((event.keys[0], event.credit_cost.cost.value))
                    seen.token = event.resume_token
                if which == "progress":
                    seen.token = message.progress.resume_token
                if which == "resync_required":
                    seen.resyncs.append(message.resync_required.reason)
                if stop_at is None and (len(seen.changes) >= until or seen.resyncs):
                    stop_at = time.monotonic() + quiet_s
                if stop_at is not None and time.monotonic() >= stop_at:
                    break
        finally:
            call.cancel()
    return seen


def change_round(admin: Admin, round_: int) -> list[tuple[str, str]]:
    made = []
    for i, code in enumerate(CODES):
        cost = f"{round_}.{i}1"
        admin.put_cost("acme", code, cost)
        made.append((code, cost))
    return made


@pytest.fixture
def fleet(start_service: Any, own_redis: RedisProcess) -> Iterator[tuple[Admin, Any]]:
    with tempfile.TemporaryDirectory(prefix="hybridcache-fleet-") as tmp:
        wrapper = launch(
            own_redis.url, token=WRAPPER_TOKEN, db_path=str(Path(tmp) / "w.db"), publish_mode="both"
        )
        admin = Admin(wrapper.url, WRAPPER_TOKEN)

        def start(key: str) -> Service:
            settings = service_settings(
                wrapper.url, own_redis.url, event_mode="stream", resume_token_key=key, watch_heartbeat_s=0.2
            )
            service: Service = start_service(settings)
            wait_for(lambda: service.freshness() == "live", timeout=15, what="stream reader live")
            wait_for(
                lambda: not service.feed.ingestor.resync_outstanding, timeout=15, what="initial resync done"
            )
            return service

        try:
            yield admin, start
        finally:
            admin.http.close()
            wrapper.stop()


def test_a_stream_moved_to_another_replica_resumes_exactly(fleet: tuple[Admin, Any]) -> None:
    admin, start = fleet
    server_a, server_b, other_key = start(KEY), start(KEY), start(OTHER_KEY)
    assert server_a.hub.fleet, "server A must be in fleet mode"
    assert server_b.hub.fleet, "server B must be in fleet mode"

    first = read(server_a, "", until=0, quiet_s=0.3)  # the confirming Progress: a token of now
    assert first.token.startswith("fleet-"), "durable mode with a key must issue fleet tokens"
    round_1 = change_round(admin, 1)
    on_a = read(server_a, first.token, until=len(round_1))
    assert not on_a.resyncs, f"server A from its own token: {on_a}"
    assert on_a.changes == round_1, f"server A from its own token: {on_a}"

    round_2 = change_round(admin, 2)  # while the consumer is away
    on_b = read(server_b, on_a.token, until=len(round_2))
    assert not on_b.resyncs, f"server B must resume A's token, got RESYNC_REQUIRED {on_b.resyncs}"
    assert on_b.changes == round_2, f"missed or duplicated changes on B: {on_b.changes} != {round_2}"

    round_3 = change_round(admin, 3)
    back_on_a = read(server_a, on_b.token, until=len(round_3))
    assert not back_on_a.resyncs, f"back on A from B's token: {back_on_a}"
    assert back_on_a.changes == round_3, f"back on A from B's token: {back_on_a}"

    foreign = read(other_key, on_b.token, until=0, quiet_s=0.2)
    assert foreign.resyncs == [REASON_OTHER_KEY], f"a token of another key: {foreign.resyncs}"


def test_a_position_older_than_the_replica_holds_gets_resync(fleet: tuple[Admin, Any]) -> None:
    admin, start = fleet
    server_a = start(KEY)
    old = read(server_a, "", until=0, quiet_s=0.3).token
    change_round(admin, 4)
    wait_for(lambda: server_a.hub.current_sequence >= len(CODES), timeout=10, what="changes applied on A")
    late = start(KEY)  # starts at the stream's end, after the token's position
    seen = read(late, old, until=0, quiet_s=0.2)
    assert seen.resyncs == [REASON_OUTSIDE_WINDOW], f"a position before what B holds: {seen}"


def test_a_snapshot_of_one_replica_resumes_on_another(fleet: tuple[Admin, Any]) -> None:
    admin, start = fleet
    server_a, server_b = start(KEY), start(KEY)
    with grpc.insecure_channel(f"127.0.0.1:{server_a.port}") as channel:
        pages = list(
            pb_grpc.HybridCacheStub(channel).ListSnapshot(
                pb.ListSnapshotRequest(tenant_id="acme"), timeout=10
            )
        )
    token = pages[-1].resume_token
    assert token.startswith("fleet-"), "ListSnapshot's token follows the same rule as the stream's"
    made = change_round(admin, 5)
    on_b = read(server_b, token, until=len(made))
    assert not on_b.resyncs, f"A's snapshot token on B: {on_b.resyncs}"
    assert on_b.changes == made, f"the changes after A's snapshot, once each, on B: {on_b.changes}"
