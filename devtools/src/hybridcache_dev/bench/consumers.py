"""Subscribers in a spawned process on the load core: N Redis PubSub connections, or N
WatchChanges streams, all on one asyncio loop (one event-driven consumer, the cheapest a
Python client gets; threads would add GIL hand-offs to the figure).

Each subscriber records `(sequence, time.monotonic_ns())` for every message it receives;
the publisher in the parent records when it sent each sequence number, and CLOCK_MONOTONIC
is system-wide, so the parent computes each delivery's latency.
"""

from __future__ import annotations

import array
import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from hybridcache_dev.bench import cpus
from hybridcache_dev.bench.servers import BENCH_EVENT_ID_PREFIX as EVENT_ID_PREFIX

WATCH_METHOD = "/hybridcache.v1.HybridCache/WatchChanges"


@dataclass(frozen=True)
class Subscribe:
    mode: str  # "redis" or "watch"
    subscribers: int
    expected: int  # messages each subscriber waits for
    timeout_s: float
    redis_port: int = 0
    channel: str = ""
    target: str = ""
    watch_request: bytes = b""


async def _watch_one(spec: Subscribe, channel: Any, ready: asyncio.Event, counter: list[int]) -> bytes:
    from hybridcache.v1 import hybridcache_pb2 as pb  # noqa: PLC0415

    stream = channel.unary_stream(WATCH_METHOD, response_deserializer=pb.WatchChangesResponse.FromString)
    call = stream(spec.watch_request, timeout=spec.timeout_s)
    await call.initial_metadata()  # the server has registered the stream once headers arrive
    counter[0] += 1
    if counter[0] == spec.subscribers:
        ready.set()
    out = array.array("q")
    try:
        async for message in call:
            now = time.monotonic_ns()
            which = message.WhichOneof("message")
            if which == "change":
                events: Any = (message.change,)
            elif which == "changes":  # a batch (the request asked for `max_batch`)
                events = message.changes.events
            else:
                continue
            for change in events:
                if change.event_id.startswith(EVENT_ID_PREFIX):
                    out.append(int(change.event_id[len(EVENT_ID_PREFIX) :]))
                    out.append(now)
            if len(out) >= 2 * spec.expected:
                break
    except Exception:  # noqa: S110 (a deadline ends the stream; what arrived is the result)
        pass
    finally:
        call.cancel()
    return out.tobytes()


async def _consume(spec: Subscribe, conn: Connection) -> list[bytes]:
    ready = asyncio.Event()
    counter = [0]
    import grpc  # noqa: PLC0415

    channel = grpc.aio.insecure_channel(spec.target)
    tasks = [
        asyncio.ensure_future(_watch_one(spec, channel, ready, counter)) for _ in range(spec.subscribers)
    ]
    await asyncio.wait_for(ready.wait(), timeout=30)
    conn.send("ready")
    results = await asyncio.gather(*tasks)
    await channel.close()
    return list(results)


def _consume_redis(spec: Subscribe, conn: Connection) -> list[bytes]:
    """N sync redis-py PubSub connections read from one thread through a selector: the
    cheapest Python consumer measured (redis.asyncio fell behind at 10k deliveries/s)."""
    import selectors  # noqa: PLC0415

    import redis  # noqa: PLC0415

    client = redis.Redis(host="127.0.0.1", port=spec.redis_port)
    subs = []
    for _ in range(spec.subscribers):
        pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call, unused-ignore]
        pubsub.subscribe(spec.channel)
        while pubsub.get_message(timeout=1.0) is None and not pubsub.subscribed:
            pass
        subs.append(pubsub)
    outs = [array.array("q") for _ in subs]
    with selectors.DefaultSelector() as selector:
        for index, pubsub in enumerate(subs):
            assert pubsub.connection is not None
            selector.register(pubsub.connection._sock, selectors.EVENT_READ, index)
        conn.send("ready")
        deadline = time.monotonic() + spec.timeout_s
        wanted = 2 * spec.expected
        pending = set(range(len(subs)))
        while pending and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1.0):
                index = key.data
                pubsub, out = subs[index], outs[index]
                # hiredis may have buffered several replies: drain until none is left.
                while (message := pubsub.get_message(timeout=0.0)) is not None:
                    out.append(int(message["data"]))
                    out.append(time.monotonic_ns())
                if len(out) >= wanted:
                    pending.discard(index)
    for pubsub in subs:
        pubsub.close()
    client.close()
    return [out.tobytes() for out in outs]


def _child(spec: Subscribe, conn: Connection) -> None:
    cpus.pin(cpus.LOAD_CPU)
    try:
        results = _consume_redis(spec, conn) if spec.mode == "redis" else asyncio.run(_consume(spec, conn))
    except BaseException as exc:
        conn.send(exc)
        raise
    conn.send(results)


class Subscribers:
    """Start the subscribers; `wait_ready()`, publish, then `results()`: per subscriber, seq -> recv ns."""

    def __init__(self, spec: Subscribe) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(spec, child), daemon=True)
        self._proc.start()
        child.close()
        self._spec = spec

    def wait_ready(self) -> None:
        if not self._conn.poll(60):
            raise RuntimeError("subscribers not ready within 60 s")
        answer = self._conn.recv()
        if isinstance(answer, BaseException):
            raise RuntimeError(f"subscribers failed: {answer!r}")

    def finished(self, timeout: float) -> bool:
        """True once the subscribers have sent their results (waits up to `timeout`)."""
        return self._conn.poll(timeout)

    def results(self) -> list[dict[int, int]]:
        if not self._conn.poll(self._spec.timeout_s + 30):
            self._proc.terminate()
            raise RuntimeError("subscribers did not finish")
        answer = self._conn.recv()
        self._proc.join(10)
        if isinstance(answer, BaseException):
            raise RuntimeError(f"subscribers failed: {answer!r}")
        out = []
        for raw in answer:
            values = array.array("q")
            values.frombytes(raw)
            out.append(dict(zip(values[0::2], values[1::2], strict=True)))
        return out


def delivery_latencies(
    sent: dict[int, int], received: list[dict[int, int]]
) -> tuple[list[int], list[int], int]:
    """(every delivery's latency, per message the latency to the LAST subscriber, lost deliveries)."""
    every: list[int] = []
    last: list[int] = []
    lost = 0
    for seq, sent_ns in sent.items():
        latest = 0
        complete = True
        for subscriber in received:
            got = subscriber.get(seq)
            if got is None:
                lost += 1
                complete = False
                continue
            every.append(got - sent_ns)
            latest = max(latest, got - sent_ns)
        if complete:
            last.append(latest)
    return every, last, lost


def paced_publish(publish: Any, count: int, rate_per_s: float) -> dict[int, int]:
    """Call `publish(seq)` `count` times at `rate_per_s`; returns seq -> send time (monotonic ns)."""
    sent: dict[int, int] = {}
    interval = 1.0 / rate_per_s
    start = time.monotonic()
    for seq in range(count):
        due = start + seq * interval
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        sent[seq] = time.monotonic_ns()
        publish(seq)
    return sent
