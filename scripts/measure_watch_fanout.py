"""Measure WatchChanges fan-out: server CPU per event per subscriber, and publish -> last subscriber.

    taskset -c 0 .venv/bin/python scripts/measure_watch_fanout.py --streams 100 --max-batch 256
    .venv/bin/python scripts/measure_watch_fanout.py --cpu-only --streams 100 --max-batch 256

End to end (the first form): this process is the server (a ChangeHub and `serve_watch` on a
real grpc.server, registered as the service registers it) and publishes `--rate` events a
second for `--seconds`; a child process, pinned to the other core, opens the streams and
timestamps every event it reads.
Reported: the server process's CPU time during publishing divided by events x streams, and
the p50/p99 of "publish -> the last of the streams received it" over the events. The child
parses messages with the generated classes (upb), so with many unbatched streams it, not
the server, can be what falls behind: read the CPU figure as the server's cost.

`--cpu-only` leaves gRPC and threads out: one thread publishes `--events` events to
`--streams` subscriptions and turns each subscription's pending items into stream messages
as `serve_watch` does, reporting CPU µs per event per subscriber for the publish (hub
fan-out) and for building the messages. Deterministic enough to compare two trees on a
busy machine; the gRPC cost per message comes on top, once per message.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from hybridcache.server.api.watch import serve_watch
from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.values import CreditCost
from hybridcache.server.hub import AllowedTenants, ChangeHub, HubEvent, StreamLimiter
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc

WATCH_METHOD = "/hybridcache.v1.HybridCache/WatchChanges"


def _serve(hub: ChangeHub, streams: int) -> tuple[grpc.Server, int]:
    stop = threading.Event()

    def watch(request: pb.WatchChangesRequest, context: Any) -> Any:
        return serve_watch(
            request,
            context,
            hub=hub,
            limiter=StreamLimiter(max_streams=streams + 10, max_per_caller=streams + 10),
            allowed_tenants=lambda _c: AllowedTenants(all=True),
            heartbeat_s=5.0,
            stop=stop,
        )

    server = grpc.server(ThreadPoolExecutor(max_workers=streams + 4))
    try:
        from hybridcache.server.api.registration import add_hybridcache_service
    except ImportError:  # a tree from before pre-serialized streams: the servicer path
        servicer = pb_grpc.HybridCacheServicer()  # type: ignore[abstract]  # only WatchChanges is called
        servicer.WatchChanges = watch  # type: ignore[method-assign]
        pb_grpc.add_HybridCacheServicer_to_server(servicer, server)
    else:
        add_hybridcache_service(server, pb_grpc.HybridCacheServicer(), watch)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _event(i: int) -> HubEvent:
    return HubEvent(
        tenant_id="t1",
        kind=Kind.CREDIT_COSTS,
        keys=(f"op.{i % 500}",),
        changed_fields=("cost",),
        event_id=f"evt-{i}",
        event_type="credit-config-changed",
        event_time_ms=int(time.time() * 1000),
        version=time.time_ns() // 1000,  # publish time in µs, read back by the child
        value=CreditCost(f"op.{i % 500}", "2.5"),
    )


def server_main(args: argparse.Namespace) -> None:
    hub = ChangeHub(retain=10_000, subscriber_buffer=10_000)
    server, port = _serve(hub, args.streams)
    child = subprocess.Popen(
        [*(["taskset", "-c", args.client_cpu] if args.client_cpu else []), sys.executable, __file__,
         "--client", str(port), "--streams", str(args.streams), "--max-batch", str(args.max_batch),
         "--events", str(int(args.rate * args.seconds))],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"  # every stream got its first message
    total = int(args.rate * args.seconds)
    interval = 1.0 / args.rate
    cpu0, wall0 = time.process_time(), time.monotonic()
    for i in range(total):
        hub.publish(_event(i))
        delay = wall0 + (i + 1) * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    publish_wall = time.monotonic() - wall0
    result = json.loads(child.stdout.readline())  # the child has read every event
    cpu = time.process_time() - cpu0
    child.wait(30)
    server.stop(None)
    print(
        json.dumps(
            {
                "streams": args.streams,
                "max_batch": args.max_batch,
                "events": total,
                "rate_per_s": args.rate,
                "publish_wall_s": round(publish_wall, 2),
                "server_cpu_s": round(cpu, 2),
                "server_cpu_us_per_event_per_stream": round(cpu / (total * args.streams) * 1e6, 2),
                **result,
            }
        )
    )


def client_main(args: argparse.Namespace) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{args.client}")
    call = channel.unary_stream(
        WATCH_METHOD, pb.WatchChangesRequest.SerializeToString, pb.WatchChangesResponse.FromString
    )
    # Unset when 1, so the script also runs against a tree whose proto predates the field.
    request = pb.WatchChangesRequest(**({"max_batch": args.max_batch} if args.max_batch > 1 else {}))
    received: list[dict[int, int]] = [{} for _ in range(args.streams)]  # sequence -> µs latency
    messages = [0] * args.streams
    started = threading.Barrier(args.streams + 1)

    def read(index: int) -> None:
        stream = call(request, timeout=600)
        next(stream)  # the confirming Progress
        started.wait()
        mine = received[index]
        for response in stream:
            messages[index] += 1
            now = time.time_ns() // 1000
            which = response.WhichOneof("message")
            events = (
                response.changes.events
                if which == "changes"
                else [response.change]
                if which == "change"
                else []
            )
            for event in events:
                mine[event.sequence] = now - event.version
            if len(mine) >= args.events:
                stream.cancel()
                return

    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(args.streams)]
    for thread in threads:
        thread.start()
    started.wait()
    print("ready", flush=True)
    for thread in threads:
        thread.join()
    last = sorted(max(r[s] for r in received) for s in received[0])
    print(
        json.dumps(
            {
                "messages_per_stream": round(sum(messages) / args.streams),
                "last_stream_p50_ms": round(last[len(last) // 2] / 1000, 2),
                "last_stream_p99_ms": round(last[int(len(last) * 0.99)] / 1000, 2),
            }
        ),
        flush=True,
    )


def cpu_only_main(args: argparse.Namespace) -> None:
    from hybridcache.server.api import watch
    from hybridcache.server.hub import WatchFilter

    hub = ChangeHub(retain=10_000, subscriber_buffer=100_000)
    subs = [hub.subscribe(WatchFilter(frozenset({"t1"}))) for _ in range(args.streams)]
    events = [_event(i) for i in range(args.events)]
    messages_of = getattr(watch, "_messages", None)
    per_wakeup = max(1, args.per_wakeup)
    publish_cpu = build_cpu = 0.0
    messages = 0
    for start in range(0, len(events), per_wakeup):
        t0 = time.process_time()
        for event in events[start : start + per_wakeup]:
            hub.publish(event)
        t1 = time.process_time()
        for sub in subs:
            items = sub.next(0)
            if messages_of is not None:  # this tree: pre-serialized, batched as asked
                out = list(messages_of(items, hub, args.max_batch))
            else:  # a tree from before: a message per item, serialized per subscriber
                out = [watch._to_response(item, hub).SerializeToString() for item in items]  # type: ignore[attr-defined]
            messages += len(out)
        t2 = time.process_time()
        publish_cpu += t1 - t0
        build_cpu += t2 - t1
    per = 1e6 / (args.events * args.streams)
    print(
        json.dumps(
            {
                "streams": args.streams,
                "events": args.events,
                "events_per_wakeup": per_wakeup,
                "max_batch": args.max_batch,
                "messages_per_stream": messages // args.streams,
                "publish_cpu_us_per_event_per_stream": round(publish_cpu * per, 3),
                "build_cpu_us_per_event_per_stream": round(build_cpu * per, 3),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--max-batch", type=int, default=1)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--client-cpu", default="1" if (os.cpu_count() or 1) > 1 else "")
    parser.add_argument("--cpu-only", action="store_true", help="no gRPC: hub fan-out and message building")
    parser.add_argument("--events", type=int, default=20_000, help="--cpu-only: events to publish")
    parser.add_argument("--per-wakeup", type=int, default=1, help="--cpu-only: events pending per read")
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)  # the child: server port
    args = parser.parse_args()
    if args.client:
        client_main(args)
    elif args.cpu_only:
        cpu_only_main(args)
    else:
        server_main(args)


if __name__ == "__main__":
    main()
