"""The pub/sub reader: PSUBSCRIBE to the change channels and feed every message to the ingestor.

Patterns. By default one pattern per app and known event type, `{app}:*:{eventType}`
(e.g. `crm:*:credit-config-changed`), rather than `{app}:*`:
* Redis filters server-side, so other traffic under the app prefix (business events that
  are not ours) never costs us a read, a decode and an `unknown-event-type` count;
* a least-privilege Redis ACL can confine this reader to exactly those patterns. Note that
  Redis checks a PSUBSCRIBE pattern literally against the user's allowed patterns, so the
  ACL must list these patterns (`&crm:*:credit-config-changed ...`), or `&crm:*` together
  with `patterns=("crm:*",)` here (the wide form, then unknown types are counted and ignored).

Gaps. Pub/sub is at-most-once: whatever is published while we are not subscribed is gone.
So every subscribe confirmation that completes the subscription (the first, and any after
a reconnect, ours or redis-py's) is reported as a gap, and the ingestor resyncs.

Liveness. A connection can die silently (a black-holed peer, a paused server). When
nothing has been read for `ping_interval_s`, a PING goes down the pub/sub connection; if
neither its PONG nor anything else arrives within `ping_timeout_s`, the connection is
declared dead, closed and re-established (-> gap -> resync). The subscribe itself is held
to the same deadline. A silent failure is therefore detected within
`ping_interval_s + ping_timeout_s + poll_interval_s` of the last byte read (defaults:
5 + 3 + 0.25 = 8.25 s); a closed connection (RST/FIN) within `poll_interval_s`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable
from typing import Any

from hybridcache.server.events.connection import RedisHandle, SocketOptions
from hybridcache.server.events.decode import APP_RE, EVENT_TYPES
from hybridcache.server.events.reader import DeadConnectionError, EventSink, RedisReader

log = logging.getLogger(__name__)

_PUBLISHED = ("pmessage", "message")


def default_patterns(apps: Iterable[str]) -> tuple[str, ...]:
    """`{app}:*:{eventType}` for each app and known event type."""
    patterns: list[str] = []
    for app in apps:
        if not APP_RE.fullmatch(app):
            raise ValueError(f"app name {app!r} must match {APP_RE.pattern}")
        patterns.extend(f"{app}:*:{event_type}" for event_type in EVENT_TYPES)
    return tuple(patterns)


class RedisSubscriber(RedisReader):
    thread_name = "hybridcache-events-pubsub"

    def __init__(
        self,
        url: str,
        sink: EventSink,
        *,
        apps: Iterable[str] = ("crm",),
        patterns: Iterable[str] | None = None,
        ping_interval_s: float = 5.0,
        ping_timeout_s: float = 3.0,
        poll_interval_s: float = 0.25,
        socket_options: SocketOptions | None = None,
        **reader_kwargs: Any,
    ) -> None:
        options = dataclasses.replace(socket_options or SocketOptions(), single_connection=False)
        super().__init__(url, sink, socket_options=options, **reader_kwargs)
        chosen = default_patterns(apps) if patterns is None else tuple(patterns)
        self.patterns: tuple[str, ...] = tuple(dict.fromkeys(chosen))  # de-duplicated, ordered
        if not self.patterns:
            raise ValueError("no patterns to subscribe to")
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.poll_interval_s = poll_interval_s

    @property
    def detection_bound_s(self) -> float:
        """Longest time a silently dead connection goes unnoticed (after the last byte read)."""
        return self.ping_interval_s + self.ping_timeout_s + self.poll_interval_s

    def _session(self, handle: RedisHandle) -> None:
        self._count_fleet(handle)  # before our own subscription: we count ourselves
        pubsub = handle.client.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call, unused-ignore]
        try:
            pubsub.psubscribe(*self.patterns)
            self._read(pubsub)
        finally:
            with contextlib.suppress(Exception):  # the connection is being discarded anyway
                pubsub.close()

    def _read(self, pubsub: Any) -> None:
        awaiting_since: float | None = time.monotonic()  # the PSUBSCRIBE wants its confirmation
        last_read = time.monotonic()
        while not self.stopping:
            now = time.monotonic()
            if awaiting_since is not None:
                budget = awaiting_since + self.ping_timeout_s - now
                if budget <= 0:
                    raise DeadConnectionError(f"no answer from Redis within {self.ping_timeout_s} s")
            else:
                budget = last_read + self.ping_interval_s - now
                if budget <= 0:
                    pubsub.ping()
                    awaiting_since = now
                    continue
            message = pubsub.get_message(timeout=min(self.poll_interval_s, budget))
            if message is None:
                continue
            last_read = time.monotonic()
            awaiting_since = None  # anything read proves the connection alive
            self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if isinstance(kind, bytes):
            kind = kind.decode()
        if kind in _PUBLISHED:
            self._message_read()
            try:
                self.sink.process(message["channel"], message["data"])
            except Exception:  # a bug; one message must not cost the subscription (and a resync)
                log.exception("processing a change notification failed")
        elif kind == "psubscribe":
            # The count of active subscriptions; the last confirmation of a (re)subscription
            # carries the full count. Redis may also send one per pattern after redis-py
            # re-subscribed by itself: the same rule catches that too.
            if int(message["data"]) >= len(self.patterns):
                # Before LIVE: freshness never reads LIVE early.
                self.sink.on_gap("subscribed", self.gap_jitter_s())
                if not self.live:
                    log.info("subscribed to change notifications (%d patterns)", len(self.patterns))
                self._became_live()
        elif kind in ("punsubscribe", "unsubscribe") and int(message["data"]) == 0:
            raise DeadConnectionError("the subscription was dropped")
        # "pong" and the rest: liveness only (already noted by the caller)
