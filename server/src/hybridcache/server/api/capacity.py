"""Separate capacity for each kind of call, so no kind can take another's threads.

The sync gRPC server runs a call on a pool thread, and that thread waits there until the
request message arrives. Each kind of call gets a lane of its own: a thread pool (grpc
honours a handler's `experimental_thread_pool`) and a cap on calls admitted to it at once,
running or queued. The gate admits a call to its lane on grpc's polling thread, before any
thread is taken, and refuses it there (RESOURCE_EXHAUSTED) when the lane is full:

    lane          threads                admitted at once        who
    unary         rpc_workers            max_concurrent_rpcs     authenticated callers
    stream        max_streams            max_streams             authenticated WatchChanges
    reflection    reflection_workers     reflection_workers      authenticated (secure mode)
    health        health_workers         8 x health_workers      anyone (probes)
    health-watch  health_workers         health_workers          anyone
    refusal       2                      no cap (each ends at once, without waiting)

grpc's own `maximum_concurrent_rpcs` is not used: it counts every call together, so a flood
of any kind would refuse health probes too. The lanes replace it.

`MessageWatch` bounds how long an admitted call may hold its thread waiting for its request
message (a slow or silent sender): past the timeout the call is cancelled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

T = TypeVar("T")

_WATCH_TICK_S = 0.1  # how often overdue request messages are looked for


class Lane:
    """One kind of call's threads and admission count. Thread-safe."""

    def __init__(self, name: str, *, threads: int, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix=f"hybridcache-{name}")
        self._lock = threading.Lock()
        self._admitted = 0

    def try_admit(self) -> bool:
        with self._lock:
            if self._admitted >= self.limit:
                return False
            self._admitted += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._admitted -= 1

    @property
    def admitted(self) -> int:
        return self._admitted

    def on_pool(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        """`behavior`, marked so that grpc runs it on this lane's pool."""
        behavior.experimental_thread_pool = self.pool  # type: ignore[attr-defined]
        return behavior

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False)  # grpc does not own the pools it was given


@dataclass(frozen=True, slots=True)
class Lanes:
    unary: Lane
    stream: Lane
    reflection: Lane
    health: Lane
    health_watch: Lane
    refusal: Lane

    @classmethod
    def build(
        cls, *, unary_threads: int, unary_limit: int, streams: int, reflection: int, health: int
    ) -> Lanes:
        return cls(
            unary=Lane("unary", threads=unary_threads, limit=unary_limit),
            stream=Lane("stream", threads=streams, limit=streams),
            reflection=Lane("reflection", threads=reflection, limit=reflection),
            health=Lane("health", threads=health, limit=8 * health),
            health_watch=Lane("health-watch", threads=health, limit=health),
            refusal=Lane("refusal", threads=2, limit=1 << 62),
        )

    def all(self) -> tuple[Lane, ...]:
        return (self.unary, self.stream, self.reflection, self.health, self.health_watch, self.refusal)

    def shutdown(self) -> None:
        for lane in self.all():
            lane.shutdown()


class MessageWatch:
    """Cancels a call whose request message has not arrived within its timeout.

    `first()` registers the call, waits for the message on the calling thread and
    unregisters it; one background thread cancels what is overdue (`context.cancel()`
    is safe from another thread), which wakes the waiting thread with an RpcError.
    """

    def __init__(self, on_timeout: Callable[[], None] = lambda: None) -> None:
        self._pending: dict[int, tuple[float, grpc.ServicerContext]] = {}
        self._on_timeout = on_timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hybridcache-message-watch", daemon=True)

    def first(self, requests: Iterator[T], context: grpc.ServicerContext, timeout_s: float) -> T | None:
        """The call's first request message, or None when the client sent none."""
        key = id(context)
        self._pending[key] = (time.monotonic() + timeout_s, context)  # dict ops: atomic under the GIL
        try:
            return next(requests, None)
        finally:
            self._pending.pop(key, None)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(_WATCH_TICK_S):
            now = time.monotonic()
            for key, (deadline, context) in list(self._pending.items()):
                if deadline <= now and self._pending.pop(key, None) is not None:
                    context.cancel()
                    self._on_timeout()
