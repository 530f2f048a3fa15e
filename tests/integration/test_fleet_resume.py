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
from hybridcache.server.events.stream_reader import RedisStreamReader
from hybridcache.server.events.stream_replay import REASON_PAST_RETENTION, REASON_STREAM_RESET
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
    round_1 = change_round(admin, 1)
    on_a = read(server_a, first.token, until=len(round_1))
    assert not on_a.resyncs, f"server A from its own token: {on_a}"
    assert on_a.changes == round_1, f"server A from its own token: {on_a}"
    assert on_a.token.startswith("fleet-"), "durable mode with a key must issue fleet tokens"

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


def caught_up(server: Service, redis_process: RedisProcess) -> None:
    """Wait until `server` has read the stream to its end."""
    stream = "{crm}:changes"

    reader = server.feed.reader
    assert isinstance(reader, RedisStreamReader), "durable mode reads the stream"

    def done() -> bool:
        last = redis_process.client().xinfo_stream(stream)["last-generated-id"].decode()
        return reader.positions().get(stream) == last

    wait_for(done, timeout=10, what="the replica read the stream to its end")


def token_after_a_change(admin: Admin, server: Service, redis_process: RedisProcess) -> str:
    """A token of `server` at a real stream entry: one round applied, then a Progress."""
    change_round(admin, 0)
    caught_up(server, redis_process)
    return read(server, "", until=0, quiet_s=0.3).token


def test_a_fresh_replica_replays_an_older_position_from_the_redis_stream(
    fleet: tuple[Admin, Any], own_redis: RedisProcess
) -> None:
    """A consumer landing on a just-started replica in durable mode resumes without a reload:
    the replica's ring starts after the token, the Redis stream still holds what followed it."""
    admin, start = fleet
    server_a = start(KEY)
    old = token_after_a_change(admin, server_a, own_redis)
    round_4 = change_round(admin, 4)
    caught_up(server_a, own_redis)
    late = start(KEY)  # starts at the stream's end, after the token's position
    floor, position = late.hub.stream_floor(), late.hub.resume_point(old).position
    assert floor is not None, "B must be in fleet mode"
    assert position is not None, "A's token must carry a stream position"
    assert position < floor, "B's ring must start after the token"
    seen = read(late, old, until=len(round_4))
    assert not seen.resyncs, f"B must replay A's older position from the stream, got {seen.resyncs}"
    assert seen.changes == round_4, f"the changes after the token, once each: {seen.changes} != {round_4}"
    # The catch-up's last token hands over to B's live stream: nothing missed, nothing twice.
    round_5 = change_round(admin, 5)
    after = read(late, seen.token, until=len(round_5))
    assert not after.resyncs, f"from the catch-up's last token: {after}"
    assert after.changes == round_5, f"from the catch-up's last token: {after}"


def test_a_position_older_than_the_streams_retention_gets_resync(
    fleet: tuple[Admin, Any], own_redis: RedisProcess
) -> None:
    admin, start = fleet
    server_a = start(KEY)
    old = token_after_a_change(admin, server_a, own_redis)
    change_round(admin, 6)
    caught_up(server_a, own_redis)
    # The retention moves past the token (exact trimming: `~` keeps whole nodes).
    own_redis.client().xtrim("{crm}:changes", maxlen=1, approximate=False)
    late = start(KEY)
    seen = read(late, old, until=0, quiet_s=0.2)
    assert seen.resyncs == [REASON_PAST_RETENTION], f"a position the stream no longer holds: {seen}"


def test_a_token_from_before_a_redis_reset_gets_resync(
    fleet: tuple[Admin, Any], own_redis: RedisProcess
) -> None:
    """Redis restarted without persistence: a new stream, unrelated ids. A replica started on
    it must not resume an old position by skipping until it passes it (the changes lost with
    the old stream would never come): RESYNC_REQUIRED."""
    admin, start = fleet
    server_a = start(KEY)
    old = token_after_a_change(admin, server_a, own_redis)
    change_round(admin, 7)  # after the token, lost with the old stream
    caught_up(server_a, own_redis)
    own_redis.restart()
    change_round(admin, 0)  # the Wrapper's publisher reconnects (a first publish may fail)
    own_redis.client().delete("{crm}:changes")  # the new stream starts empty
    late = start(KEY)  # on the new, empty stream: its floor is before the old position
    change_round(admin, 8)  # the new stream's entries: ids later than the token's
    caught_up(late, own_redis)
    seen = read(late, old, until=len(CODES))
    assert seen.resyncs == [REASON_STREAM_RESET], f"a token of the old stream on the new one: {seen}"


def test_a_snapshot_of_one_replica_resumes_on_another(
    fleet: tuple[Admin, Any], own_redis: RedisProcess
) -> None:
    admin, start = fleet
    server_a, server_b = start(KEY), start(KEY)
    token_after_a_change(admin, server_a, own_redis)  # a token before the stream's first entry is A's alone
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
