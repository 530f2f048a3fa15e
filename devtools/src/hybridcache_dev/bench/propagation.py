"""Change propagation through the real Service, next to raw Redis pub/sub in the same run.

Events in the seed's format are PUBLISHed straight to Redis (`crm:{tenant}:credit-config-changed`,
a new cost and a rising version each), paced at 1,000/s, and received by N WatchChanges
streams (or, for the floor, N plain Redis subscribers) in one process on the load core.
Redis stays on the load core for both, so the two differ only by the service's path:
subscriber thread -> decode -> cache apply -> change hub -> stream -> client.

"publish -> cache applied" is timed inside the server process (`servers._recorder`, the
Service's `on_change_applied` hook: the moment the cache applied the change, CLOCK_MONOTONIC, fetched after
each run with the bench-only `Applied` RPC), against the same publish times.

The streams ask for batches (`max_batch`), as the shipped client does: under load each
wake-up of a stream sends everything pending in one message.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from hybridcache.client import WatchConfig
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache_dev.bench.consumers import (
    Subscribe,
    Subscribers,
    delivery_latencies,
    paced_publish,
)
from hybridcache_dev.bench.floor import SUBSCRIBER_RATES, _publish_count, pubsub_figure
from hybridcache_dev.bench.servers import APPLIED_METHOD
from hybridcache_dev.bench.servers import BENCH_EVENT_ID_PREFIX as EVENT_ID_PREFIX
from hybridcache_dev.bench.stack import TENANTS, service_env, start_service
from hybridcache_dev.bench.stats import Summary, ratio, summarize
from hybridcache_dev.bench.suite import Bench, Figure, Group, pooled
from hybridcache_dev.stack.redis_process import RedisProcess

TENANT = TENANTS[0]
CHANNEL = f"crm:{TENANT}:credit-config-changed"
OPERATION = "crm.leads.create"
WATCH_RATES = {1: 1000.0, 10: 1000.0, 100: 1000.0}  # the Service's streams: 1,000 events/s for every N
MAX_BATCH = WatchConfig().max_batch  # what the shipped client asks for


def _event(seq: int, version: int) -> str:
    cost = f"{seq % 10_000 / 100 + 0.01:.2f}"
    return json.dumps(
        {
            # Unique across the whole run (the ingestor drops a repeated eventId as a duplicate):
            # the version, which the subscribers report back as the message's number.
            "eventId": f"{EVENT_ID_PREFIX}{version}",
            "eventType": "credit-config-changed",
            "tenantId": TENANT,
            "data": {
                "operationCode": OPERATION,
                "changedFields": ["cost"],
                "newValue": cost,
                # No oldValue: with one, the ingestor compares it with the held value and, on a
                # mismatch, refetches from the Wrapper (the authority) instead of applying.
                "version": version,
            },
        }
    )


class _Versions:
    """Versions only move forward across every run of this process (the core drops older ones)."""

    def __init__(self) -> None:
        self.next = 1_000_000

    def take(self, count: int) -> int:
        first = self.next
        self.next += count
        return first


def watch_figure(
    bench: Bench,
    redis: RedisProcess,
    target: str,
    *,
    subscribers: int,
    rate: float,
    versions: _Versions,
    extra: list[Figure],
) -> Figure:
    """WatchChanges latency to the last of `subscribers` streams; the publish -> applied
    figure of the same runs goes to `extra`."""
    count = _publish_count(bench, subscribers, rate)
    request = _watch_request()
    client = redis.client()
    applied_runs: list[Summary] = []
    applied_samples: list[list[int]] = []
    runs_last: list[Summary] = []
    runs_every: list[Summary] = []
    samples_last: list[list[int]] = []
    samples_every: list[list[int]] = []
    lost_total = 0
    for _ in range(bench.plan.runs):
        base = versions.take(count)
        bodies = [_event(seq, base + seq) for seq in range(count)]
        subs = Subscribers(
            Subscribe("watch", subscribers, count, count / rate + 20, target=target, watch_request=request)
        )
        subs.wait_ready()
        sent_by_seq = paced_publish(lambda seq, b=bodies: client.publish(CHANNEL, b[seq]), count, rate)
        sent = {base + seq: at for seq, at in sent_by_seq.items()}
        every, last, lost = delivery_latencies(sent, subs.results())
        lost_total += lost
        applied = _applied_latencies(target, sent)
        if applied:
            applied_runs.append(summarize(applied, seconds=count / rate, errors=count - len(applied)))
            applied_samples.append(applied)
        if not every:
            raise RuntimeError(
                "no WatchChanges event arrived: are change notifications wired into the Service?"
            )
        runs_every.append(summarize(every, seconds=count / rate, errors=lost))
        if not last:
            raise RuntimeError(
                f"no event reached all {subscribers} WatchChanges streams ({lost} deliveries lost)"
            )
        runs_last.append(summarize(last, seconds=count / rate, errors=lost))
        samples_every.append(every)
        samples_last.append(last)
    client.close()
    if applied_runs:
        applied_figure = Figure(
            f"applied.subs{subscribers}", pooled(applied_samples, applied_runs), applied_runs
        )
        applied_figure.notes = {
            "subscribers": subscribers,
            "rate_per_s": rate,
            "latency_is": "Redis PUBLISH -> the change applied to the cache (timed in the server process)",
            "percentiles": "over the 3 runs pooled",
            "not_applied": sum(r.errors for r in applied_runs),
        }
        extra.append(applied_figure)
    figure = Figure(f"watch.subs{subscribers}", pooled(samples_last, runs_last), runs_last)
    figure.notes = {
        "subscribers": subscribers,
        "rate_per_s": rate,
        "messages_per_run": count,
        "latency_is": "Redis PUBLISH -> the last WatchChanges stream's receive, per event",
        "every_delivery": pooled(samples_every, runs_every).to_json(),
        "percentiles": "over the 3 runs pooled",
        "lost_deliveries": lost_total,
    }
    return figure


def _watch_request() -> bytes:
    request = pb.WatchChangesRequest(tenant_ids=[TENANT], kinds=[pb.KIND_CREDIT_COSTS], max_batch=MAX_BATCH)
    return request.SerializeToString()


def _applied_latencies(target: str, sent: dict[int, int]) -> list[int]:
    """publish -> applied (ns) of this run's events, from the server's own timestamps."""
    with grpc.insecure_channel(target) as channel:
        take_applied: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(APPLIED_METHOD)
        applied = json.loads(take_applied(b"", timeout=10))
    out = []
    for event_id, applied_ns in applied.items():
        sent_ns = sent.get(int(event_id[len(EVENT_ID_PREFIX) :]))
        if sent_ns is not None:
            out.append(applied_ns - sent_ns)
    return out


def _probe(redis: RedisProcess, target: str, versions: _Versions) -> bool:
    """Events reach a WatchChanges stream within 10 s? (Right after start the Service is
    resyncing its replicas after subscribing; an event then may be superseded by the resync,
    so the probe publishes every 0.5 s until one arrives.)"""
    subs = Subscribers(Subscribe("watch", 1, 1, 10.0, target=target, watch_request=_watch_request()))
    subs.wait_ready()
    client = redis.client()
    try:
        for _ in range(20):
            client.publish(CHANNEL, _event(0, versions.take(1)))
            if subs.finished(0.5):
                break
    finally:
        client.close()
    arrived = bool(subs.results()[0])
    _applied_latencies(target, {})  # forget the probe's events
    return arrived


def propagation_group(bench: Bench, redis: RedisProcess, wrapper: Any) -> Group:
    group = Group("propagation")
    versions = _Versions()
    # 100 streams from one caller: above the default per-caller cap (20) and near the total (100).
    # The bench's versions start far above the seed's (_Versions): no version window, or every
    # event would be refused as implausible and refetched instead of applied.
    env = service_env(
        redis, wrapper, max_streams="200", max_streams_per_caller="200", event_version_window="0"
    )
    with start_service(env) as server:
        if not _probe(redis, server.target, versions):
            group.missing.append(
                "publish -> WatchChanges and publish -> applied: no event reached a WatchChanges stream "
                "(change notifications not wired into the Service in this build)"
            )
            for subscribers, rate in SUBSCRIBER_RATES.items():
                group.add(pubsub_figure(bench, redis, subscribers, rate))
            return group
        for subscribers, rate in SUBSCRIBER_RATES.items():
            # Interleaved per subscriber count: raw Redis, then the Service, same placement.
            group.add(pubsub_figure(bench, redis, subscribers, rate))
            extra: list[Figure] = []
            group.add(
                watch_figure(
                    bench,
                    redis,
                    server.target,
                    subscribers=subscribers,
                    rate=WATCH_RATES[subscribers],
                    versions=versions,
                    extra=extra,
                )
            )
            for figure in extra:
                group.add(figure)
    _targets(group)
    return group


def _targets(group: Group) -> None:
    f = group.figures
    raw1, watch1 = f["redis.pubsub.subs1"].summary, f["watch.subs1"].summary
    applied = f.get("applied.subs1")
    if applied is None:
        group.target(
            "publish -> cache applied p99 at 1,000 events/s",
            "≤ 2 ms",
            "not measured",
            None,
            "the server process recorded no applied bench event",
        )
    else:
        a = applied.summary
        group.target(
            "publish -> cache applied p99 at 1,000 events/s",
            "≤ 2 ms",
            f"{a.p99_us / 1000:.2f} ms (p50 {a.p50_us / 1000:.2f} ms; 1 WatchChanges stream open; "
            f"timed in the server process)",
            a.p99_us <= 2000,
        )
    r = ratio(watch1.p99_us, raw1.p99_us)
    group.target(
        "publish -> WatchChanges p99 vs raw Redis publish -> subscribe p99 (1 subscriber, 1,000/s)",
        "≤ 4×",
        f"{r}× ({watch1.p99_us} vs {raw1.p99_us} µs)",
        r <= 4,
    )
    last100 = f["watch.subs100"]
    rate = last100.notes["rate_per_s"]
    lost = last100.notes["lost_deliveries"]
    group.target(
        "publish -> the last of 100 WatchChanges subscribers p99",
        "≤ 10 ms (at 1,000 events/s)",
        f"{last100.summary.p99_us / 1000:.2f} ms at {rate:,.0f} events/s, {lost} deliveries lost "
        f"(raw Redis, 100 subscribers at {f['redis.pubsub.subs100'].notes['rate_per_s']:,.0f}/s: "
        f"{f['redis.pubsub.subs100'].summary.p99_us / 1000:.2f} ms)",
        last100.summary.p99_us <= 10_000 and lost == 0 if rate >= 1000 else None,
    )
