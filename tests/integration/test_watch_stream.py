"""WatchChanges over a real gRPC server on port 0, fed by a real ChangeHub.

The server here is minimal (the service registered as the real one is, with `serve_watch`
as WatchChanges and no other RPC implemented) so these tests pin the stream's behaviour
independently of the rest of the service.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from hybridcache.server.api.registration import add_hybridcache_service
from hybridcache.server.api.watch import DEFAULT_MESSAGES_PER_S, serve_watch
from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.values import CreditCost
from hybridcache.server.hub import AllowedTenants, ChangeHub, HubEvent, StreamLimiter
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from tests.helpers import wait_for

CALL_TIMEOUT_S = 30  # every RPC has a deadline, so a broken server fails a test instead of hanging it
POOL_PREFIX = "watch-test-pool"


def _event(tenant: str = "t1", key: str = "op.a", *, padding: int = 0) -> HubEvent:
    return HubEvent(
        tenant_id=tenant,
        kind=Kind.CREDIT_COSTS,
        keys=(key,),
        changed_fields=("cost", *(["x" * padding] if padding else [])),
        event_id=f"evt-{key}",
        event_type="credit-config-changed",
        event_time_ms=1_700_000_000_000,
        version=3,
        value=CreditCost(key, "2.5"),
    )


def _allowed_from_metadata(context: Any) -> AllowedTenants:
    """Stands in for the security layer: x-test-tenants ("*" or "a,b") and x-test-caller."""
    metadata = dict(context.invocation_metadata())
    caller = metadata.get("x-test-caller", "")
    tenants = metadata.get("x-test-tenants", "*")
    if tenants == "*":
        return AllowedTenants(all=True, caller=caller)
    return AllowedTenants(all=False, tenants=frozenset(t for t in tenants.split(",") if t), caller=caller)


@dataclasses.dataclass
class WatchServer:
    hub: ChangeHub
    limiter: StreamLimiter
    stop: threading.Event
    stub: pb_grpc.HybridCacheStub
    running: list[int]  # [handlers currently running]: one holds a pool thread each
    target: str  # "127.0.0.1:<port>", for the shipped client

    def watch(
        self, *, tenants: str = "*", caller: str = "", **request: Any
    ) -> Any:  # a grpc call: iterator of WatchChangesResponse, with cancel()
        metadata = (("x-test-tenants", tenants), ("x-test-caller", caller))
        return self.stub.WatchChanges(
            pb.WatchChangesRequest(**request), metadata=metadata, timeout=CALL_TIMEOUT_S
        )


@contextmanager
def watch_server(
    *,
    retain: int = 10_000,
    buffer: int = 1_000,
    heartbeat_s: float = 5.0,
    max_streams: int = 64,
    max_per_caller: int = 64,
    messages_per_s: float = DEFAULT_MESSAGES_PER_S,
) -> Iterator[WatchServer]:
    hub = ChangeHub(retain=retain, subscriber_buffer=buffer)
    limiter = StreamLimiter(max_streams=max_streams, max_per_caller=max_per_caller)
    stop = threading.Event()

    running = [0]
    running_lock = threading.Lock()

    def watch(request: pb.WatchChangesRequest, context: Any) -> Iterator[bytes]:
        with running_lock:
            running[0] += 1
        try:
            yield from serve_watch(
                request,
                context,
                hub=hub,
                limiter=limiter,
                allowed_tenants=_allowed_from_metadata,
                heartbeat_s=heartbeat_s,
                stop=stop,
                stop_poll_s=0.1,
                messages_per_s=messages_per_s,
            )
        finally:
            with running_lock:
                running[0] -= 1

    # Sized as the real server is: a thread per open stream, plus a few for the rest.
    server = grpc.server(ThreadPoolExecutor(max_workers=max_streams + 4, thread_name_prefix=POOL_PREFIX))
    # The stubs declare every RPC abstract; the others answer UNIMPLEMENTED, as wanted here.
    servicer = pb_grpc.HybridCacheServicer()  # type: ignore[abstract]
    add_hybridcache_service(server, servicer, watch)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield WatchServer(hub, limiter, stop, pb_grpc.HybridCacheStub(channel), running, f"127.0.0.1:{port}")
    finally:
        stop.set()
        channel.close()
        server.stop(grace=None).wait(10)


def _threads_outside_pool() -> int:
    return sum(not t.name.startswith(POOL_PREFIX) for t in threading.enumerate())


def _kind(message: pb.WatchChangesResponse) -> str | None:
    return message.WhichOneof("message")


def _error_reason(error: grpc.RpcError) -> str:
    assert isinstance(error, grpc.Call), error  # grpc's errors from a call are its Call too
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return str(info.reason)


@pytest.mark.timeout(60)
def test_resume_after_cancel_misses_nothing_and_repeats_nothing() -> None:
    total = 3_000
    with watch_server(buffer=total) as srv:  # cannot fall behind: this test is about resume
        first = srv.watch(tenant_ids=["t1"])
        confirm = next(first)  # the server is watching: safe to start producing
        assert _kind(confirm) == "progress"

        def produce() -> None:
            for i in range(total):
                srv.hub.publish(_event(key=f"op.{i}"))
                if i % 50 == 0:
                    time.sleep(0.001)  # spread over time so cancels land mid-stream

        producer = threading.Thread(target=produce)
        producer.start()
        seen: list[int] = []
        token = confirm.progress.resume_token
        call = first
        rng = random.Random(5)
        reconnects = 0
        while len(seen) < total:
            stop_after = rng.randint(50, 400)
            for message in call:
                assert _kind(message) in ("change", "progress"), message
                if _kind(message) == "change":
                    seen.append(message.change.sequence)
                    token = message.change.resume_token
                    stop_after -= 1
                if stop_after == 0 or len(seen) == total:
                    break
            call.cancel()
            reconnects += 1
            call = srv.watch(tenant_ids=["t1"], resume_token=token)
        call.cancel()
        producer.join(10)

        assert reconnects >= 5
        assert seen == list(range(1, total + 1))  # zero missed, zero duplicated, in order
        wait_for(lambda: srv.hub.subscriber_count() == 0, timeout=10, what="subscriptions closed")


@pytest.mark.timeout(30)
def test_change_event_content_and_token() -> None:
    with watch_server() as srv:
        call = srv.watch(kinds=[pb.KIND_CREDIT_COSTS], key_prefix="op.")
        assert _kind(next(call)) == "progress"
        srv.hub.publish(_event(key="nope"))  # filtered out by the prefix
        srv.hub.publish(_event(key="op.x"))
        change = next(call).change
        assert (change.sequence, change.tenant_id, change.kind) == (2, "t1", pb.KIND_CREDIT_COSTS)
        assert list(change.keys) == ["op.x"]
        assert change.credit_cost == pb.CreditCost(operation_code="op.x", cost=pb.Decimal(value="2.5"))
        assert change.version == 3
        assert srv.hub.resume_point(change.resume_token).sequence == 2
        call.cancel()


@pytest.mark.timeout(30)
def test_kind_unspecified_in_a_filter_means_every_kind() -> None:
    with watch_server() as srv:
        call = srv.watch(kinds=[pb.KIND_UNSPECIFIED, pb.KIND_CREDIT_COSTS])
        assert _kind(next(call)) == "progress"
        srv.hub.publish(dataclasses.replace(_event(), kind=Kind.FEATURE_FLAGS, value=None))
        assert next(call).change.kind == pb.KIND_FEATURE_FLAGS
        call.cancel()


@pytest.mark.timeout(30)
def test_token_outside_the_window_gets_resync_required_then_live_events() -> None:
    with watch_server(retain=10) as srv:
        for i in range(50):
            srv.hub.publish(_event(key=f"op.{i}"))
        call = srv.watch(resume_token=srv.hub.token(5))
        first = next(call)
        assert _kind(first) == "resync_required"
        assert first.resync_required.reason == "resume token outside the retained window"
        assert srv.hub.resume_point(first.resync_required.resume_token).sequence == 50
        srv.hub.publish(_event())
        assert next(call).change.sequence == 51
        call.cancel()


@pytest.mark.timeout(30)
def test_token_from_another_instance_gets_resync_required() -> None:
    with watch_server() as srv:
        srv.hub.publish(_event())
        call = srv.watch(resume_token=ChangeHub().token(1))
        first = next(call)
        assert first.resync_required.reason == "unknown server instance"
        assert srv.hub.resume_point(first.resync_required.resume_token).instance_id == srv.hub.instance_id
        call.cancel()


@pytest.mark.timeout(30)
def test_heartbeat_when_idle() -> None:
    with watch_server(heartbeat_s=0.2) as srv:
        call = srv.watch()
        assert next(call).progress.sequence == 0
        started = time.monotonic()
        beat = next(call)
        assert _kind(beat) == "progress"
        assert 0.15 <= time.monotonic() - started < 5
        sequence = srv.hub.publish(_event())
        assert next(call).change.sequence == sequence
        beat = next(call)
        assert beat.progress.sequence == sequence
        assert srv.hub.resume_point(beat.progress.resume_token).sequence == sequence
        call.cancel()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("request_fields", "reason"),
    [
        ({"tenant_ids": ["bad tenant"]}, "INVALID_ARGUMENT"),
        ({"tenant_ids": ["x" * 65]}, "INVALID_ARGUMENT"),
        ({"tenant_ids": [f"t{i}" for i in range(101)]}, "INVALID_ARGUMENT"),
        ({"kinds": [99]}, "INVALID_ARGUMENT"),
        ({"kinds": [pb.KIND_UNSPECIFIED, 99]}, "INVALID_ARGUMENT"),
        ({"key_prefix": "k" * 129}, "INVALID_ARGUMENT"),
        ({"resume_token": "not-a-token!"}, "INVALID_RESUME_TOKEN"),
        ({"resume_token": "FUTURE"}, "INVALID_RESUME_TOKEN"),
    ],
)
def test_invalid_requests(request_fields: dict[str, Any], reason: str) -> None:
    with watch_server() as srv:
        if request_fields.get("resume_token") == "FUTURE":
            request_fields = {"resume_token": srv.hub.token(7)}
        with pytest.raises(grpc.RpcError) as caught:
            next(srv.watch(**request_fields))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _error_reason(caught.value) == reason
        assert srv.limiter.in_use() == 0


@pytest.mark.timeout(30)
def test_tenants_the_caller_may_not_read() -> None:
    with watch_server() as srv:
        with pytest.raises(grpc.RpcError) as caught:
            next(srv.watch(tenants="t1", tenant_ids=["t1", "t2"]))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert _error_reason(caught.value) == "TENANT_NOT_ALLOWED"

        # No tenants asked for: exactly the caller's.
        call = srv.watch(tenants="t1,t3")
        assert _kind(next(call)) == "progress"
        srv.hub.publish(_event("t2"))
        srv.hub.publish(_event("t3"))
        assert next(call).change.tenant_id == "t3"
        call.cancel()


@pytest.mark.timeout(30)
def test_stream_caps_and_slots_freed_on_cancel() -> None:
    with watch_server(max_streams=3, max_per_caller=2) as srv:
        a1 = srv.watch(caller="alice")
        a2 = srv.watch(caller="alice")
        next(a1), next(a2)
        with pytest.raises(grpc.RpcError) as caught:
            next(srv.watch(caller="alice"))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "this caller" in str(caught.value.details())

        b1 = srv.watch(caller="bob")
        next(b1)
        with pytest.raises(grpc.RpcError) as caught:
            next(srv.watch(caller="carol"))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _error_reason(caught.value) == "TOO_MANY_STREAMS"

        a1.cancel()
        wait_for(lambda: srv.limiter.in_use() == 2, timeout=10, what="the cancelled stream's slot")
        c1 = srv.watch(caller="carol")
        assert _kind(next(c1)) == "progress"
        for call in (a2, b1, c1):
            call.cancel()
        wait_for(
            lambda: srv.limiter.in_use() == 0 and srv.hub.subscriber_count() == 0, timeout=10, what="release"
        )


@pytest.mark.timeout(30)
def test_shutdown_ends_streams_with_unavailable() -> None:
    with watch_server(heartbeat_s=60) as srv:
        call = srv.watch()
        next(call)
        srv.stop.set()
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            next(call)
        assert time.monotonic() - started < 3
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert caught.value.details() == "server shutting down"
        wait_for(
            lambda: srv.hub.subscriber_count() == 0 and srv.limiter.in_use() == 0, timeout=10, what="release"
        )
        with pytest.raises(grpc.RpcError) as caught:
            next(srv.watch())
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.timeout(120)
def test_a_thousand_streams_opened_and_cancelled_leak_nothing() -> None:
    wave = 50
    with watch_server(max_streams=wave, max_per_caller=wave) as srv:

        def one_wave(read_first: bool) -> None:
            calls = [srv.watch() for _ in range(wave)]
            if read_first:
                for call in calls:
                    assert _kind(next(call)) == "progress"
                assert srv.hub.subscriber_count() == wave
                assert srv.limiter.in_use() == wave
            for call in calls:
                call.cancel()
            wait_for(
                lambda: srv.hub.subscriber_count() == 0 and srv.limiter.in_use() == 0 and srv.running[0] == 0,
                timeout=10,
                what="every stream's subscription, slot and thread released",
            )

        # The pool keeps its threads for reuse (up to max_workers); what must come back is
        # every handler having returned (its thread free) and no thread of any other kind.
        others_before = _threads_outside_pool()
        for i in range(1_000 // wave):
            # Every other wave cancels before reading: the cancel may race the handler's start.
            one_wave(read_first=i % 2 == 0)
        wait_for(
            lambda: _threads_outside_pool() <= others_before + 1, timeout=10, what="threads back to baseline"
        )
        assert threading.active_count() <= others_before + wave + 4 + 1
        srv.hub.publish(_event())  # the hub still works and has nobody to tell
        assert srv.hub.subscriber_count() == 0


@pytest.mark.timeout(60)
def test_a_slow_consumer_is_bounded_and_told_to_resync() -> None:
    bound = 20
    with watch_server(buffer=bound) as srv:
        slow = srv.watch()
        assert _kind(next(slow)) == "progress"

        # The client reads nothing while events big enough to fill gRPC's flow-control
        # windows pour in: its server-side buffer must stay bounded and the producer unhindered.
        peak_buffered = 0
        started = time.monotonic()
        for i in range(2_000):
            srv.hub.publish(_event(key=f"op.{i}", padding=2_000))
            peak_buffered = max(peak_buffered, srv.hub.stats().buffered)
        publish_time = time.monotonic() - started
        assert peak_buffered <= bound
        assert srv.hub.stats().lagged_total >= 1
        assert publish_time < 10

        # When it reads again: what was already in flight, then ResyncRequired, then live events.
        for message in slow:
            assert _kind(message) in ("change", "resync_required")
            if _kind(message) == "resync_required":
                assert message.resync_required.reason == "subscriber fell behind"
                break
        sentinel = srv.hub.publish(_event(key="sentinel"))
        for message in slow:
            if _kind(message) == "change" and message.change.sequence == sentinel:
                break
            if (
                _kind(message) == "resync_required"
                and (srv.hub.resume_point(message.resync_required.resume_token).sequence or 0) >= sentinel
            ):
                # The subscriber was still behind when the sentinel came (a later marker,
                # not yet read, covered it): the marker says so; the next one must arrive.
                sentinel = srv.hub.publish(_event(key="sentinel"))
        slow.cancel()
