"""WatchChanges batches (`max_batch` > 1) over a real gRPC server, and the shipped clients
unpacking them: every event once, in order, with its own token; resync markers in place;
unbatched streams byte-for-byte as before; the cap."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import grpc
import pytest

from hybridcache.client import AsyncHybridCacheClient, ClientConfig, HybridCacheClient, WatchConfig
from hybridcache.server.api.watch import MAX_BATCH
from hybridcache.server.hub import ChangeHub, Sequenced, to_proto
from hybridcache.v1 import hybridcache_pb2 as pb
from tests.integration.test_watch_stream import CALL_TIMEOUT_S, WatchServer, _event, watch_server

pytestmark = pytest.mark.timeout(60)
CLIENT_CONFIG = ClientConfig(watch=WatchConfig(idle_timeout=10, initial_backoff=0.05, max_backoff=0.5))


def changes_of(message: pb.WatchChangesResponse) -> list[pb.ChangeEvent]:
    which = message.WhichOneof("message")
    if which == "changes":
        return list(message.changes.events)
    return [message.change] if which == "change" else []


def read_changes(call: Any, count: int) -> tuple[list[pb.ChangeEvent], int]:
    """Read until `count` changes arrived: (the changes, how many messages carried them)."""
    events: list[pb.ChangeEvent] = []
    messages = 0
    for message in call:
        batch = changes_of(message)
        messages += bool(batch)
        events.extend(batch)
        if len(events) >= count:
            break
    call.cancel()
    return events, messages


def assert_in_order_with_tokens(hub: ChangeHub, events: list[pb.ChangeEvent], first: int, last: int) -> None:
    """Events of one tenant: its own numbering is the hub's, so each token seals its event's."""
    assert [e.sequence for e in events] == list(range(first, last + 1))  # each once, in order
    for e in events:
        assert hub.resume_point(e.resume_token).sequence == e.sequence


def started(srv: WatchServer, **request: Any) -> Any:
    call = srv.watch(**request)
    first = next(call)
    assert first.WhichOneof("message") == "progress"  # the server is watching: publish now
    return call


def test_a_burst_arrives_complete_in_order_in_fewer_messages() -> None:
    total = 2_000
    with watch_server(buffer=total) as srv:
        batched = started(srv, max_batch=256)
        single = started(srv)
        for i in range(total):
            srv.hub.publish(_event(key=f"op.{i}"))
        events, messages = read_changes(batched, total)
        assert_in_order_with_tokens(srv.hub, events, 1, total)
        assert messages < total / 2, f"{messages} messages for {total} events: no batching"
        events, messages = read_changes(single, total)
        assert_in_order_with_tokens(srv.hub, events, 1, total)
        assert messages == total  # a stream that did not ask gets no batches


def test_a_replay_is_sent_in_batches_of_at_most_the_cap() -> None:
    with watch_server() as srv:
        token = srv.hub.token(srv.hub.current_sequence)
        total = 2 * MAX_BATCH + 500
        for i in range(total):
            srv.hub.publish(_event(key=f"op.{i}"))
        # Asking for more than the cap is clamped, not refused. The replay is pending all at
        # once, so the batch sizes are exact.
        call = srv.watch(max_batch=1_000_000, resume_token=token)
        sizes = []
        events: list[pb.ChangeEvent] = []
        for message in call:
            batch = changes_of(message)
            sizes.append(len(batch))
            events.extend(batch)
            if len(events) == total:
                break
        call.cancel()
        assert sizes == [MAX_BATCH, MAX_BATCH, 500]
        assert_in_order_with_tokens(srv.hub, events, 1, total)


def test_resync_markers_are_never_reordered_within_batches() -> None:
    bound = 20
    with watch_server(buffer=bound) as srv:
        call = started(srv, max_batch=256)
        for i in range(2_000):  # big events, not read meanwhile: the subscriber falls behind
            srv.hub.publish(_event(key=f"op.{i}", padding=2_000))
        sentinel = srv.hub.publish(_event(key="sentinel"))
        last = 0
        resyncs = 0
        for message in call:
            which = message.WhichOneof("message")
            if which == "resync_required":
                resyncs += 1
                point = srv.hub.resume_point(message.resync_required.resume_token).sequence
                assert point is not None
                assert point >= last  # nothing before the marker is newer than its position
                last = point
            for event in changes_of(message):
                assert event.sequence > last  # in order, and after the marker's position
                last = event.sequence
            if last >= sentinel:  # delivered, or covered by a marker positioned at or after it
                break
        call.cancel()
        assert resyncs >= 1
        assert srv.hub.stats().lagged_total >= 1


def test_unbatched_stream_bytes_are_unchanged() -> None:
    with watch_server() as srv:
        # Read the raw bytes, as an old client's decoder would receive them.
        channel = grpc.insecure_channel(srv.target)
        raw: grpc.UnaryStreamMultiCallable[pb.WatchChangesRequest, bytes] = channel.unary_stream(
            "/hybridcache.v1.HybridCache/WatchChanges",
            request_serializer=pb.WatchChangesRequest.SerializeToString,
            response_deserializer=None,
        )
        call = raw(pb.WatchChangesRequest(), metadata=(("x-test-tenants", "*"),), timeout=CALL_TIMEOUT_S)
        first = pb.WatchChangesResponse.FromString(next(call))
        sequence = srv.hub.current_sequence
        assert srv.hub.resume_point(first.progress.resume_token).sequence == sequence
        assert first == to_proto.progress(sequence, first.progress.resume_token)
        events = [_event(key=f"op.{i}") for i in range(5)]
        for event in events:
            srv.hub.publish(event)
        received = [next(call) for _ in events]
        call.cancel()
        channel.close()
        # Tokens are sealed (new ones per call): take each from the bytes, check what it opens to.
        tokens = [pb.WatchChangesResponse.FromString(r).change.resume_token for r in received]
        positions = list(range(sequence + 1, sequence + 1 + len(events)))
        assert [srv.hub.resume_point(t).sequence for t in tokens] == positions
        expected = [
            to_proto.change_event(Sequenced(n, e, n), token).SerializeToString()
            for n, e, token in zip(positions, events, tokens, strict=True)
        ]
        assert received == expected


def test_the_client_unpacks_batches_and_resumes_mid_batch() -> None:
    total = 600
    with watch_server() as srv, HybridCacheClient(srv.target, CLIENT_CONFIG) as client:
        start = srv.hub.token(0)
        for i in range(total):
            srv.hub.publish(_event(key=f"op.{i}"))
        # The replay is pending at once: batches of 256, 256, 88, handed out one event at a time.
        stream = client.watch(resume_token=start)
        taken: list[pb.ChangeEvent] = []
        for event in stream:
            taken.append(event)
            assert stream.resume_token == event.resume_token  # the token moves per event
            if len(taken) == 300:  # in the middle of the second batch
                break
        saved = stream.resume_token
        stream.close()
        rest: list[pb.ChangeEvent] = []
        with client.watch(resume_token=saved) as resumed:
            for event in resumed:
                rest.append(event)
                if len(rest) == total - 300:
                    break
        assert_in_order_with_tokens(srv.hub, taken + rest, 1, total)  # zero missed, zero duplicated


def test_the_async_client_unpacks_batches() -> None:
    total = 600
    with watch_server() as srv:
        for i in range(total):
            srv.hub.publish(_event(key=f"op.{i}"))

        async def read() -> list[int]:
            async with AsyncHybridCacheClient(srv.target, CLIENT_CONFIG) as client:
                seen: list[int] = []
                async with client.watch(resume_token=srv.hub.token(0)) as stream:
                    async for event in stream:
                        seen.append(event.sequence)
                        assert stream.resume_token == event.resume_token
                        if len(seen) == total:
                            break
                return seen

        assert asyncio.run(read()) == list(range(1, total + 1))


def test_under_sustained_load_a_batched_stream_is_paced_and_loses_nothing() -> None:
    # 100 messages/s for the one open stream: at most one message every 10 ms.
    total = 300
    with watch_server(buffer=total, messages_per_s=100) as srv:
        call = started(srv, max_batch=256)

        def publish_steadily() -> None:
            for i in range(total):
                srv.hub.publish(_event(key=f"op.{i}"))
                time.sleep(0.001)  # ~1,000 changes/s, the load being paced (not a readiness wait)

        publisher = threading.Thread(target=publish_steadily)
        started_at = time.monotonic()
        publisher.start()
        events, messages = read_changes(call, total)
        elapsed = time.monotonic() - started_at
        publisher.join()
        assert_in_order_with_tokens(srv.hub, events, 1, total)
        most = elapsed / 0.010 + 2  # one message per 10 ms, and the first at once
        assert messages <= most, f"{messages} messages in {elapsed:.2f} s: the stream was not paced"


def test_an_idle_batched_stream_is_not_held() -> None:
    # One message every 2 s at most; but this stream has been quiet for longer than that.
    with watch_server(messages_per_s=0.5) as srv:
        call = started(srv, max_batch=256)
        time.sleep(2.5)  # the stream's last message (the confirming Progress) is older than the gap
        published_at = time.monotonic()
        srv.hub.publish(_event(key="op.after-quiet"))
        events, _ = read_changes(call, 1)
        waited = time.monotonic() - published_at
        assert [e.keys[0] for e in events] == ["op.after-quiet"]
        assert waited < 1.0, f"an idle stream held its change for {waited:.2f} s (pacing must not apply)"
