"""Durable mode: read the Redis stream back for a WatchChanges resume (`api/catch_up.py`).

A fleet resume token carries the id of the last stream entry its changes cover. A replica
honours it from its own ring when it can; this module answers the two questions the ring
cannot:

* **Is the position one of this stream's?** (`check`) The token's own entry must still be in
  the stream. A Redis restarted without persistence starts a new stream whose ids have no
  relation to the old ones (they are clock-based: later, or earlier if the clock is behind),
  so a position from before has no entry in it: RESYNC_REQUIRED "the event stream was reset".
  A position whose entry was trimmed (MAXLEN) is past the stream's retention: everything up
  to the oldest entry left is gone, so what followed the token may be gone too. (A position
  before the stream's first entry, 0-0, has no entry to check: the caller refuses it.)
  Publishers that choose their own ids and
  reuse them after a reset would defeat the check (ours use `*`).
* **Which keys changed after it?** (`read`) The entries after the position up to a bound,
  decoded by the service's own decoder (so a message the live path rejected is rejected
  here too; the signature window is judged at the entry's own time, its id's milliseconds,
  as the live reader judged it then). At most `max_entries` are read: a position further
  behind is refused ("too far behind"), so a resume costs bounded time and memory.

Reads go through one pooled client (thread-safe); every call is bounded by the socket timeouts.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import redis

from hybridcache.server.events.connection import RedisHandle, SocketOptions, open_redis
from hybridcache.server.events.decode import DecoderConfig, Event, decode
from hybridcache.server.events.stream_reader import (
    StreamId,
    format_id,
    oldest_left,
    parse_id,
    stream_info,
    stream_key,
)

# ResyncRequired reasons (the wire carries them verbatim).
REASON_STREAM_RESET = "the event stream was reset after the resume token"
REASON_PAST_RETENTION = "resume token older than the event stream's retention"
REASON_TOO_FAR_BEHIND = "resume token too far behind the event stream"
REASON_UNREADABLE = "the event stream could not be read to resume"
_PAGE = 500


class StreamReplay:
    """Reads one event app's stream back: `check(position)` and `read(after, until)`."""

    def __init__(
        self,
        url: str,
        app: str,
        decoder: DecoderConfig,
        *,
        max_entries: int,
        socket_options: SocketOptions | None = None,
        open_handle: Callable[[str, SocketOptions], RedisHandle] = open_redis,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.stream = stream_key(app)
        self.max_entries = max_entries
        self._decoder = decoder
        self._url = url
        # A pool, not one connection: several stream handlers may resume at once.
        self._options = dataclasses.replace(socket_options or SocketOptions(), single_connection=False)
        self._open = open_handle
        self._handle: RedisHandle | None = None
        self._lock = threading.Lock()

    def _client(self) -> redis.Redis:
        with self._lock:
            if self._handle is None:
                self._handle = self._open(self._url, self._options)
            return self._handle.client

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.client.close()
                self._handle = None

    def head(self) -> StreamId | None:
        """The id of the stream's last entry ((0, 0) for an empty or missing stream); None
        when Redis could not be read."""
        try:
            entries: Any = self._client().xrevrange(self.stream, count=1)
        except redis.RedisError:
            return None
        return parse_id(entries[0][0]) if entries else (0, 0)

    def check(self, position: StreamId) -> str | None:
        """None if the entry at `position` is in the stream (nothing after it was trimmed);
        otherwise the reason a resume from it must resync."""
        try:
            client = self._client()
            if client.xrange(self.stream, min=format_id(position), max=format_id(position), count=1):
                return None
            return absent_reason(position, stream_info(client, self.stream))
        except redis.RedisError:
            return REASON_UNREADABLE

    def read(self, after: StreamId, until: StreamId) -> list[Event] | str:
        """The decoded events of the entries in (`after`, `until`], in stream order, or the
        reason they cannot all be had (trimmed or deleted meanwhile, too many, Redis down)."""
        events: list[Event] = []
        start = "(" + format_id(after)
        read = 0
        try:
            client = self._client()
            while True:
                entries: Any = client.xrange(self.stream, min=start, max=format_id(until), count=_PAGE)
                for entry_id, fields in entries:
                    read += 1
                    if read > self.max_entries:
                        return REASON_TOO_FAR_BEHIND
                    event = self._decode(parse_id(entry_id), fields)
                    if event is not None:
                        events.append(event)
                if len(entries) < _PAGE:
                    break
                start = "(" + (
                    entries[-1][0].decode() if isinstance(entries[-1][0], bytes) else entries[-1][0]
                )
            info = stream_info(client, self.stream)
        except redis.RedisError:
            return REASON_UNREADABLE
        # Trimming removes the oldest first: if `after` is still there, nothing we read past
        # was trimmed before we read it. An XDEL in the range is a loss we cannot see.
        if info is not None and parse_id(info.get("max-deleted-entry-id") or b"0-0") > after:
            return REASON_PAST_RETENTION
        return self.check(after) or events

    def _decode(self, position: StreamId, fields: dict[bytes, bytes]) -> Event | None:
        channel, message = fields.get(b"channel"), fields.get(b"message")
        if channel is None or message is None:
            return None
        result = decode(channel, message, config=self._decoder, now_ms=position[0])
        return result if isinstance(result, Event) else None


def absent_reason(position: StreamId, info: dict[str, Any] | None) -> str:
    """The entry at `position` is not in the stream: trimmed away, or another stream."""
    if info is None:
        return REASON_STREAM_RESET
    oldest = oldest_left(info)
    if oldest is not None and oldest > position and parse_id(info["last-generated-id"]) >= position:
        return REASON_PAST_RETENTION
    return REASON_STREAM_RESET
