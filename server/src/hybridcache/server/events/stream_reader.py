"""Durable mode: read change notifications from the Redis stream `{<app>}:changes` with XREAD.

Publishers XADD each notification (fields `channel` and `message`, the same bytes they
PUBLISH) to the stream as well. Unlike pub/sub, a stream keeps what was written while we
were away, so after a reconnect the reader continues from the last ID it processed
(kept in memory) and needs NO resync. A resync is needed only when entries we had not
read are gone:

* first start: the position is the stream's last ID (`$`) taken just before the initial
  resync is requested, so nothing between that resync's snapshot and the first read is lost;
* trimmed past us: an entry newer than our position was removed before we read it. XINFO
  STREAM tells: `max-deleted-entry-id` newer than our position (XDEL), or entries were
  trimmed (`entries-added` > `length`, XADD MAXLEN / XTRIM) and the oldest entry left is
  newer than our position (this over-reports when the oldest left is exactly our
  successor, i.e. a reader lagging by the whole MAXLEN: an extra resync is safe, a missed
  one is not; size MAXLEN well above the worst lag). Checked after every reconnect and
  after every non-empty read, against the position before that read;
* reset: the stream is gone or its last ID is older than our position (a Redis restart
  without persistence): resync, and continue from the stream's current end.

Positions for the fleet (`positions`, optional; one stream only): the reader reports where it
starts and brackets each entry it processes with `begin_entry(id)` / `end_entry()`, so the
change hub can tag every change with the entry it came from and issue resume tokens any
replica reading the same stream can honour (hub/tokens.py, fleet tokens).

Liveness: XREAD BLOCK returns within `block_ms`, so a socket timeout of `block_ms` +
`ping_timeout_s` catches a silent connection: within 2 x block + 0.1 s (Redis's timer
resolution) + ping_timeout of the last answer (defaults: 4.1 s; `detection_bound_s`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any, Protocol

import redis

from hybridcache.server.events.connection import RedisHandle, SocketOptions
from hybridcache.server.events.decode import APP_RE
from hybridcache.server.events.reader import EventSink, RedisReader

log = logging.getLogger(__name__)

StreamId = tuple[int, int]
_ZERO: StreamId = (0, 0)
_SERVER_TIMER_S = 0.1  # Redis fires BLOCK timeouts from its event loop: up to 1/hz late


def stream_key(app: str) -> str:
    """`{crm}:changes`: the braces are a Redis Cluster hash tag (the stream lives on one slot)."""
    return f"{{{app}}}:changes"


def parse_id(raw: bytes | str) -> StreamId:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(stream_id: StreamId) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"


class PositionSink(Protocol):
    """Who is told the stream position as entries are processed (the change hub)."""

    def stream_started(self, position: StreamId) -> None: ...
    def begin_entry(self, position: StreamId) -> None: ...
    def end_entry(self) -> None: ...


class RedisStreamReader(RedisReader):
    thread_name = "hybridcache-events-stream"

    def __init__(
        self,
        url: str,
        sink: EventSink,
        *,
        apps: Iterable[str] = ("crm",),
        block_ms: int = 500,
        batch: int = 500,
        ping_timeout_s: float = 3.0,
        socket_options: SocketOptions | None = None,
        positions: PositionSink | None = None,
        **reader_kwargs: Any,
    ) -> None:
        base = socket_options or SocketOptions()
        options = dataclasses.replace(base, socket_timeout_s=block_ms / 1000 + ping_timeout_s)
        super().__init__(url, sink, socket_options=options, **reader_kwargs)
        for app in apps:
            if not APP_RE.fullmatch(app):
                raise ValueError(f"app name {app!r} must match {APP_RE.pattern}")
        self.streams = tuple(dict.fromkeys(stream_key(app) for app in apps))
        if positions is not None and len(self.streams) != 1:
            raise ValueError("stream positions for resume tokens need exactly one event app (one stream)")
        self._position_sink = positions
        self.block_ms = block_ms
        self.batch = batch
        # Last processed ID per stream; survives reconnects (that is the point of durable mode).
        self._positions: dict[str, StreamId] = {}
        # Per stream, the (max deleted ID, oldest ID left) at the last loss reported.
        self._reported: dict[str, tuple[StreamId, StreamId]] = {}
        self._added: dict[str, int] = {}  # entries-added last seen: it only drops on a reset

    @property
    def detection_bound_s(self) -> float:
        """Longest time a silently dead connection goes unnoticed: the XREAD in flight ends
        (block + Redis's timer resolution, 100 ms at the default hz 10), then the next one
        gets no answer within the socket timeout (block + ping_timeout)."""
        return self.block_ms / 1000 + _SERVER_TIMER_S + self.socket_options.socket_timeout_s

    def positions(self) -> dict[str, str]:
        return {stream: format_id(pos) for stream, pos in self._positions.items()}

    def _session(self, handle: RedisHandle) -> None:
        client = handle.client
        self._position(client)
        self._became_live()
        while not self.stopping:
            response: Any = client.xread(
                {stream: format_id(self._positions[stream]) for stream in self.streams},
                count=self.batch,
                block=self.block_ms,
            )
            for raw_stream, entries in response or ():
                stream = raw_stream.decode() if isinstance(raw_stream, bytes) else raw_stream
                if not entries:
                    continue
                # Check against the position before this batch: an entry between it and the
                # batch that was removed before we read it is lost.
                gap = self._examine(stream, stream_info(client, stream))
                if gap is not None:
                    self.sink.on_gap(gap)
                for entry_id, fields in entries:
                    entry_position = parse_id(entry_id)
                    if self._position_sink is None:
                        self._entry(fields)
                    else:
                        self._position_sink.begin_entry(entry_position)
                        try:
                            self._entry(fields)
                        finally:
                            self._position_sink.end_entry()
                    self._positions[stream] = entry_position

    def _position(self, client: redis.Redis) -> None:
        """On (re)connect: take the start position, or check that nothing was lost meanwhile."""
        gap: str | None = None
        for stream in self.streams:
            info = stream_info(client, stream)
            if stream not in self._positions:
                # First start: `$`, taken before the resync is requested, so nothing between
                # the resync's snapshot and our first read is lost.
                self._positions[stream] = _ZERO if info is None else parse_id(info["last-generated-id"])
                self._added[stream] = 0 if info is None else int(info.get("entries-added", 0))
                if self._position_sink is not None:
                    self._position_sink.stream_started(self._positions[stream])
                gap = "subscribed"
            else:
                gap = self._examine(stream, info) or gap
        if gap is not None:
            self.sink.on_gap(gap)

    def _examine(self, stream: str, info: dict[str, Any] | None) -> str | None:
        """Was an entry newer than our position removed before we read it ("stream trimmed"),
        or the stream replaced ("stream reset")? A loss already reported is not reported
        again: the resync it caused covers it."""
        position = self._positions[stream]
        last = _ZERO if info is None else parse_id(info["last-generated-id"])
        raw_added = 0 if info is None else info.get("entries-added")  # None before Redis 7
        added = None if raw_added is None else int(raw_added)
        if last < position or (added is not None and added < self._added.get(stream, 0)):
            # Gone, or recreated (a Redis restart without persistence): start from its end.
            self._positions[stream] = min(position, last)
            self._added[stream] = added or 0
            self._reported.pop(stream, None)
            return "stream reset"
        if added is not None:
            self._added[stream] = added
        if info is None:
            return None
        floors = self._reported.get(stream, (_ZERO, _ZERO))
        deleted = parse_id(info.get("max-deleted-entry-id") or b"0-0")  # XDEL only (Redis >= 7)
        oldest = oldest_left(info)
        lost = deleted > max(position, floors[0]) or (
            oldest is not None and oldest > max(position, floors[1])
        )
        if not lost:
            return None
        self._reported[stream] = (max(deleted, floors[0]), max(oldest or _ZERO, floors[1]))
        return "stream trimmed"

    def _entry(self, fields: dict[bytes, bytes]) -> None:
        self._message_read()
        channel = fields.get(b"channel")
        message = fields.get(b"message")
        if channel is None:
            self.sink.stats.add("received")
            self.sink.reject("bad-channel")
        elif message is None:
            self.sink.stats.add("received")
            self.sink.reject("malformed-json")
        else:
            try:
                self.sink.process(channel, message)
            except Exception:  # a bug; one entry must not stop the stream
                log.exception("processing a change notification failed")


def stream_info(client: redis.Redis, stream: str) -> dict[str, Any] | None:
    """XINFO STREAM, or None when the stream does not exist."""
    try:
        info: dict[str, Any] = client.xinfo_stream(stream)
    except redis.ResponseError as exc:
        if "no such key" in str(exc).lower():
            return None
        raise
    return info


def oldest_left(info: dict[str, Any]) -> StreamId | None:
    """If entries were ever trimmed: the ID below which everything is gone; else None.

    Everything older than the oldest entry left was trimmed; if that is newer than our
    position, the trimmed ones may include entries we had not read. (This over-reports when
    the oldest left is exactly our successor, i.e. a reader lagging by the stream's whole
    MAXLEN: an extra resync is safe, a missed one is not; size MAXLEN well above the worst
    lag.) With everything trimmed, every ID up to the last one generated is gone: the result
    is then that last ID, and a loss means it is newer than our position.
    """
    added, length = info.get("entries-added"), info.get("length")
    if added is not None and length is not None and int(added) <= int(length):
        return None  # nothing was ever trimmed or deleted (Redis >= 7 tells us)
    if not length:
        return parse_id(info["last-generated-id"])
    first = info.get("recorded-first-entry-id")
    if first is None:  # Redis < 7
        entry = info.get("first-entry")
        first = entry[0] if entry is not None else None
    return None if first is None else parse_id(first)
