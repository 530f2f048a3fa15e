"""Redis URLs for the event reader: Sentinel URL parsing and the socket options applied."""

from __future__ import annotations

import socket

import pytest
import redis

from hybridcache.server.events.connection import (
    SentinelUrl,
    SocketOptions,
    open_redis,
    parse_sentinel_url,
    redis_kwargs,
)


def test_sentinel_url_with_several_sentinels_credentials_and_db() -> None:
    parsed = parse_sentinel_url(
        "redis+sentinel://app:p%40ss@10.0.0.1:26379,10.0.0.2:26380/mymaster/2?sentinel_password=s3"
    )
    assert parsed == SentinelUrl(
        hosts=(("10.0.0.1", 26379), ("10.0.0.2", 26380)),
        service_name="mymaster",
        db=2,
        username="app",
        password="p@ss",
        sentinel_password="s3",
    )


def test_sentinel_url_minimal_and_ipv6() -> None:
    assert parse_sentinel_url("redis+sentinel://[::1]:26379/main") == SentinelUrl(
        hosts=(("::1", 26379),), service_name="main"
    )


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "redis+sentinel://host/main",  # no port
        "redis+sentinel://host:26379",  # no service
        "redis+sentinel://host:26379/main/0/extra",
        "redis+sentinel://host:x/main",
    ],
)
def test_bad_sentinel_urls(url: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each has its own message
        parse_sentinel_url(url)


def test_tcp_clients_get_bounded_timeouts_keepalive_no_retries_and_one_connection() -> None:
    kwargs = redis_kwargs("redis://127.0.0.1:1/0", SocketOptions(connect_timeout_s=1.5, socket_timeout_s=4.0))
    assert kwargs["single_connection_client"] is True
    assert kwargs["socket_connect_timeout"] == 1.5
    assert kwargs["socket_timeout"] == 4.0
    assert kwargs["health_check_interval"] == 0
    assert kwargs["retry"].get_retries() == 0
    assert kwargs["socket_keepalive"] is True
    if hasattr(socket, "TCP_KEEPIDLE"):
        assert kwargs["socket_keepalive_options"][socket.TCP_KEEPIDLE] == 10
    assert kwargs["client_name"] == "hybridcache-events"


def test_unix_socket_clients_have_no_tcp_options() -> None:
    assert "socket_keepalive" not in redis_kwargs("unix:///tmp/nowhere.sock?db=0", SocketOptions())


def test_opening_an_unreachable_url_raises_a_connection_error() -> None:
    with pytest.raises(redis.ConnectionError):
        open_redis("unix:///tmp/hybridcache-no-such.sock?db=0")


def test_sentinel_handle_closes_its_sentinel_links_too() -> None:
    handle = open_redis("redis+sentinel://127.0.0.1:1,127.0.0.1:2/main")
    handle.close()  # nothing connected yet; closing must not raise
