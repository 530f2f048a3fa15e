"""What the two Redis readers (pub/sub and stream) share: the thread, reconnection with
jittered exponential backoff, and the freshness state.

A reader runs "sessions": connect, subscribe or position, read until stopped or the
connection fails. Any failure ends the session; the next one starts after a backoff delay
(the shared policy, `hybridcache.client.backoff`, with equal jitter: in [delay/2, delay],
doubling up to `backoff_max_s`, reset once a session is live again). The thread survives
everything: an unexpected exception is logged and treated like a lost connection.

Why the backoff stops at 0.25 s by default (it was 5 s): after a Redis outage the reader's
next attempt, not Redis, set how long answers stayed behind the Wrapper (up to the whole
cap: 4.41 s p99 in docs/RELIABILITY.md scenario 1). An attempt against a Redis that is
down is one refused TCP connection; 4-8 a second per instance is nothing to Redis.

Fleet-scaled resync jitter. The resync after a gap waits a random delay so that a fleet
that lost Redis together does not load every snapshot from the Wrapper at once; one
instance alone has nobody to spread from. At each session start, before subscribing, the
reader counts the pub/sub clients with our client name on Redis (`CLIENT LIST TYPE
pubsub`): the instances that resubscribed before it. Its place in that queue, k (itself
included), sets its resync jitter to `k x jitter_per_instance_s`, capped by the configured
resync jitter: after a shared Redis restart the first back resyncs at once and the N-th
waits up to N slots, so the fleet's snapshot loads spread over about N slots; an instance
alone waits at most one slot; one that lost only its own connection (the fleet still
subscribed) waits up to the configured jitter, as before. Where CLIENT LIST is not allowed
(an ACL), the configured jitter applies.

Freshness is LIVE only while a session is live (subscribed / reading) AND no gap resync is
outstanding; from a lost connection until the resync after the reconnect has finished,
it is DEGRADED.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Protocol

import redis

from hybridcache.client.backoff import Backoff, BackoffPolicy
from hybridcache.server.events.connection import RedisHandle, SocketOptions, open_redis
from hybridcache.server.events.ratelog import RateLimitedLog
from hybridcache.server.events.stats import EventStats

log = logging.getLogger(__name__)


class Freshness(StrEnum):
    LIVE = "live"
    DEGRADED = "degraded"


class EventSink(Protocol):
    """What a reader needs from the ingestor."""

    @property
    def stats(self) -> EventStats: ...
    @property
    def resync_outstanding(self) -> bool: ...
    def process(self, channel: bytes | str, data: bytes | str) -> object: ...
    def reject(self, reason: str) -> None: ...
    def on_gap(self, reason: str, jitter_max_s: float | None = None) -> None: ...


class DeadConnectionError(Exception):
    """The connection stopped answering within the liveness bound."""


class RedisReader:
    thread_name = "hybridcache-events-reader"

    def __init__(
        self,
        url: str,
        sink: EventSink,
        *,
        socket_options: SocketOptions,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 0.25,
        jitter_per_instance_s: float = 0.2,
        log_interval_s: float = 60.0,
        open_handle: Callable[[str, SocketOptions], RedisHandle] = open_redis,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.sink = sink
        self.socket_options = socket_options
        self._backoff = Backoff(BackoffPolicy(backoff_initial_s, backoff_max_s), rng)
        self._open_handle = open_handle
        self._jitter_per_instance_s = jitter_per_instance_s
        self._queue_place = 0  # 1 + instances already subscribed at session start (0: unknown)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._live = False
        self._last_message_at: float | None = None
        self._failures = RateLimitedLog(
            log, "Redis connection for change notifications lost: %s (%d)", interval_s=log_interval_s
        )

    # --- control

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop reading; True if the thread ended within `timeout`."""
        self._stopping.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- state

    def freshness(self) -> Freshness:
        if self._live and not self.sink.resync_outstanding:
            return Freshness.LIVE
        return Freshness.DEGRADED

    @property
    def live(self) -> bool:
        """A session is connected and subscribed / reading (a resync may still be running)."""
        return self._live

    @property
    def last_message_at(self) -> float | None:
        """Wall-clock time (epoch seconds) the last change notification was read."""
        return self._last_message_at

    # --- for sessions

    def _became_live(self) -> None:
        self._live = True
        self._backoff.reset()

    def _message_read(self) -> None:
        self._last_message_at = time.time()

    def _count_fleet(self, handle: RedisHandle) -> None:
        """Count the instances already subscribed on this Redis (before we subscribe)."""
        self._queue_place = 0
        try:
            clients = handle.client.client_list(_type="pubsub")
        except redis.RedisError:
            return  # not allowed (ACL) or not answered: the configured jitter applies
        finally:
            # Close the connection the count used (the pub/sub one is opened after this): one
            # connection per instance, as Redis and its operators see it.
            handle.client.connection_pool.disconnect()
        name = self.socket_options.client_name
        self._queue_place = 1 + sum(1 for c in clients if c.get("name") == name)

    def gap_jitter_s(self) -> float | None:
        """The resync jitter a gap should use (None: the configured one)."""
        if not self._queue_place:
            return None
        return self._queue_place * self._jitter_per_instance_s

    @property
    def queue_place(self) -> int:
        return self._queue_place

    def _session(self, handle: RedisHandle) -> None:
        """Connect, subscribe/position, read until stopped; raise when the connection fails."""
        raise NotImplementedError

    # --- the thread

    def _run(self) -> None:
        while not self._stopping.is_set():
            handle: RedisHandle | None = None
            try:
                handle = self._open_handle(self.url, self.socket_options)
                self._session(handle)
            except (redis.RedisError, OSError, DeadConnectionError) as exc:
                self._lost(type(exc).__name__)
            except Exception as exc:  # a bug: keep the thread, treat it as a lost connection
                log.exception("change-notification reader failed unexpectedly")
                self._lost(type(exc).__name__)
            finally:
                self._live = False
                if handle is not None:
                    handle.close()
            if self._stopping.is_set():
                break
            self._stopping.wait(self._backoff.next_delay())

    def _lost(self, what: str) -> None:
        if self._live:
            self.sink.stats.add("reconnects")
        self._live = False
        self._failures.note(what)
