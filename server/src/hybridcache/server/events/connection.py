"""A Redis client for the event reader, from a URL, with timeouts that bound failure detection.

URLs: `redis://`, `rediss://` (TLS), `unix://` (as redis-py parses them), and Redis Sentinel
as `redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]`
(query: `sentinel_password`, `sentinel_username`; the userinfo is the master's
credentials). Sentinel clients re-resolve the master on every reconnect, so a failover is
one more reconnect (and so one more gap and resync).

Socket settings, and why:
* `retry=0`: redis-py's own retries would reconnect and re-subscribe under our feet; the
  reader owns reconnection (backoff, freshness state, the gap it implies).
* `health_check_interval=0`: redis-py's health check sends a PING but never enforces a
  deadline for the answer; the reader sends its own PINGs and enforces one.
* `socket_timeout`: bounds a blocked write or read (a black-holed peer with a full send
  buffer); `socket_connect_timeout` bounds connecting.
* TCP keepalive (idle 10 s, 3 probes 3 s apart: ~19 s): a backstop under the
  application-level ping, e.g. for a peer that vanished without a RST.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

SENTINEL_SCHEMES = ("redis+sentinel://",)
CLIENT_NAME = "hybridcache-events"


@dataclass(frozen=True, slots=True)
class SocketOptions:
    connect_timeout_s: float = 2.0
    socket_timeout_s: float = 5.0
    keepalive_idle_s: int = 10
    keepalive_interval_s: int = 3
    keepalive_count: int = 3
    client_name: str = CLIENT_NAME
    # One connection instead of a pool (see open_redis). Pub/sub opens its own anyway.
    single_connection: bool = True


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    hosts: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def _keepalive_options(options: SocketOptions) -> dict[int, int]:
    found: dict[int, int] = {}
    for name, value in (
        ("TCP_KEEPIDLE", options.keepalive_idle_s),
        ("TCP_KEEPINTVL", options.keepalive_interval_s),
        ("TCP_KEEPCNT", options.keepalive_count),
    ):
        constant = getattr(socket, name, None)  # not every platform has all three
        if constant is not None:
            found[constant] = value
    return found


def _common_kwargs(options: SocketOptions) -> dict[str, Any]:
    return {
        "socket_connect_timeout": options.connect_timeout_s,
        "socket_timeout": options.socket_timeout_s,
        "health_check_interval": 0,
        "retry": Retry(NoBackoff(), 0),
        "client_name": options.client_name,
    }


def _tcp_kwargs(options: SocketOptions) -> dict[str, Any]:
    return {"socket_keepalive": True, "socket_keepalive_options": _keepalive_options(options)}


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Parse `redis+sentinel://[user:pass@]h:p[,h:p]/service[/db][?sentinel_password=..]`."""
    if not url.startswith(SENTINEL_SCHEMES):
        raise ValueError("not a redis+sentinel:// URL")
    rest = url.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, _, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) or None
    hosts: list[tuple[str, int]] = []
    for part in netloc.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"sentinel address {part!r} must be host:port")
        hosts.append((host.strip("[]"), int(port)))
    segments = [unquote(s) for s in path.split("/") if s]
    if not segments or len(segments) > 2:
        raise ValueError("sentinel URL path must be /service_name or /service_name/db")
    db = int(segments[1]) if len(segments) == 2 else 0
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    return SentinelUrl(
        hosts=tuple(hosts),
        service_name=segments[0],
        db=db,
        username=username,
        password=password,
        sentinel_username=params.get("sentinel_username"),
        sentinel_password=params.get("sentinel_password"),
    )


class RedisHandle:
    """A client (bytes replies) plus whatever else must be closed with it (sentinel links)."""

    def __init__(self, client: redis.Redis, extra: tuple[redis.Redis, ...] = ()) -> None:
        self.client = client
        self._extra = extra

    def close(self) -> None:
        for each in (self.client, *self._extra):
            with contextlib.suppress(Exception):  # closing a broken connection may fail: fine
                each.close()


def open_redis(url: str, options: SocketOptions | None = None) -> RedisHandle:
    """Connect to one of the supported URLs (raises redis.ConnectionError if it cannot).

    One connection, not a pool: a pool silently replaces a connection it finds dead, and
    the reader must see every reconnect (it may mean lost messages), so each reader session
    opens its own handle. Sentinel clients keep their pool (it is how they follow a
    failover); the stream reader's own checks catch a reset stream there too.
    """
    options = options or SocketOptions()
    if url.startswith(SENTINEL_SCHEMES):
        return _sentinel_client(parse_sentinel_url(url), options)
    return RedisHandle(redis.Redis.from_url(url, **redis_kwargs(url, options)))


def redis_kwargs(url: str, options: SocketOptions) -> dict[str, Any]:
    """The client options for a redis://, rediss:// or unix:// URL."""
    kwargs = _common_kwargs(options) | {"single_connection_client": options.single_connection}
    if not url.startswith("unix://"):
        kwargs |= _tcp_kwargs(options)
    return kwargs


def _sentinel_client(parsed: SentinelUrl, options: SocketOptions) -> RedisHandle:
    sentinel_kwargs: dict[str, Any] = {
        "socket_connect_timeout": options.connect_timeout_s,
        "socket_timeout": options.socket_timeout_s,
    }
    if parsed.sentinel_password is not None:
        sentinel_kwargs["password"] = parsed.sentinel_password
    if parsed.sentinel_username is not None:
        sentinel_kwargs["username"] = parsed.sentinel_username
    sentinel = Sentinel(list(parsed.hosts), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call, unused-ignore]
    master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call, unused-ignore]
        parsed.service_name,
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
        **_common_kwargs(options),
        **_tcp_kwargs(options),
    )
    return RedisHandle(master, tuple(sentinel.sentinels))
