"""Client configuration: the service config JSON, channel options, targets, metadata."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from hybridcache.client import ClientConfig, KeepAliveConfig, RetryPolicy, TLSConfig, WatchConfig
from hybridcache.client._channel import resolve_target
from hybridcache.client._config import call_metadata, channel_options, service_config
from hybridcache.client._watch import reconnect_backoff
from hybridcache.v1 import hybridcache_pb2

UNARY_METHODS = {
    m.name
    for m in hybridcache_pb2.DESCRIPTOR.services_by_name["HybridCache"].methods
    if not m.server_streaming and not m.client_streaming
}
DURATION = re.compile(r"^\d+(\.\d{1,9})?s$")


def _options(config: ClientConfig, *, multi: bool = False) -> dict[str, Any]:
    return dict(channel_options(config, multi_address=multi))


def test_service_config_retries_unavailable_only() -> None:
    options = _options(ClientConfig())
    assert options["grpc.enable_retries"] == 1
    parsed = json.loads(options["grpc.service_config"])
    (method_config,) = parsed["methodConfig"]
    policy = method_config["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert 3 <= policy["maxAttempts"] <= 5
    assert DURATION.match(policy["initialBackoff"])
    assert DURATION.match(policy["maxBackoff"])
    assert policy["backoffMultiplier"] >= 1
    names = {(n["service"], n["method"]) for n in method_config["name"]}
    assert names == {("hybridcache.v1.HybridCache", m) for m in UNARY_METHODS}
    assert "WatchChanges" not in {m for _, m in names}
    assert parsed["retryThrottling"] == {"maxTokens": 10, "tokenRatio": 0.1}
    assert "loadBalancingConfig" not in parsed


def test_durations_are_proto_json() -> None:
    config = ClientConfig(retry=RetryPolicy(initial_backoff=0.05, max_backoff=1.0, max_attempts=5))
    policy = service_config(config, multi_address=False)["methodConfig"][0]["retryPolicy"]
    assert (policy["initialBackoff"], policy["maxBackoff"], policy["maxAttempts"]) == ("0.05s", "1s", 5)


def test_no_retry_policy_disables_retries() -> None:
    options = _options(ClientConfig(retry=None))
    assert options["grpc.enable_retries"] == 0
    assert "methodConfig" not in json.loads(options["grpc.service_config"])


@pytest.mark.parametrize("attempts", [1, 2, 6])
def test_retry_attempts_outside_3_to_5_are_refused(attempts: int) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=attempts)


def test_load_balancing() -> None:
    assert json.loads(_options(ClientConfig(), multi=True)["grpc.service_config"])["loadBalancingConfig"] == [
        {"round_robin": {}}
    ]
    pick_first = ClientConfig(load_balancing_policy="pick_first")
    assert json.loads(_options(pick_first, multi=True)["grpc.service_config"])["loadBalancingConfig"] == [
        {"pick_first": {}}
    ]
    with pytest.raises(ValueError, match="load_balancing_policy"):
        ClientConfig(load_balancing_policy="grpclb")


def test_keepalive_message_size_and_extra_options() -> None:
    config = ClientConfig(
        keepalive=KeepAliveConfig(interval=20, timeout=5, permit_without_calls=True),
        max_message_bytes=1024,
        channel_options=[("grpc.max_receive_message_length", 2048)],
    )
    options = channel_options(config, multi_address=False)
    as_dict = dict(options)
    assert as_dict["grpc.keepalive_time_ms"] == 20_000
    assert as_dict["grpc.keepalive_timeout_ms"] == 5_000
    assert as_dict["grpc.keepalive_permit_without_calls"] == 1
    assert as_dict["grpc.max_send_message_length"] == 1024
    # Extra options come last, so gRPC's last-wins rule lets them override.
    assert options[-1] == ("grpc.max_receive_message_length", 2048)
    assert "grpc.keepalive_time_ms" not in _options(ClientConfig(keepalive=None))


def test_tls_server_name_override_becomes_an_option() -> None:
    config = ClientConfig(tls=TLSConfig(root_certificates=b"pem", server_name_override="hybridcache.test"))
    assert _options(config)["grpc.ssl_target_name_override"] == "hybridcache.test"
    with pytest.raises(ValueError, match="together"):
        TLSConfig(private_key=b"key")


def test_bearer_token_metadata() -> None:
    assert call_metadata(ClientConfig()) == ()
    assert call_metadata(ClientConfig(bearer_token="s3cret")) == (("authorization", "Bearer s3cret"),)
    with pytest.raises(ValueError, match="bearer_token"):
        ClientConfig(bearer_token="a\nb")


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("\u2026", "position 0"),  # the README's old placeholder: INTERNAL "Invalid metadata" at call time
        ("s3cr\u00e9t", "position 4"),
        ("tab\there", "position 3"),
        ("\x7f", "position 0"),
        (" padded", "leading or trailing"),
    ],
)
def test_a_token_grpc_cannot_send_is_refused_at_construction(token: str, problem: str) -> None:
    with pytest.raises(ValueError, match="bearer_token") as caught:
        ClientConfig(bearer_token=token)
    assert problem in str(caught.value)
    assert token.strip() not in str(caught.value), "the message must not repeat the (secret) token"


def test_config_is_frozen_and_validated() -> None:
    config = ClientConfig()
    with pytest.raises(AttributeError):
        config.default_timeout = 5  # type: ignore[misc]
    with pytest.raises(ValueError, match="default_timeout"):
        ClientConfig(default_timeout=0)
    with pytest.raises(ValueError, match="idle_timeout"):
        WatchConfig(idle_timeout=0)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("localhost:50051", ("localhost:50051", False)),
        ("dns:///hybridcache.internal:50051", ("dns:///hybridcache.internal:50051", False)),
        ("ipv4:10.0.0.1:1,10.0.0.2:1", ("ipv4:10.0.0.1:1,10.0.0.2:1", True)),
        (["127.0.0.1:5000"], ("ipv4:127.0.0.1:5000", False)),
        (["127.0.0.1:5000", "127.0.0.2:5001"], ("ipv4:127.0.0.1:5000,127.0.0.2:5001", True)),
        (["[::1]:5000", "[0:0::1]:5001"], ("ipv6:[::1]:5000,[::1]:5001", True)),
    ],
)
def test_targets(target: str | list[str], expected: tuple[str, bool]) -> None:
    assert resolve_target(target) == expected


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("", "empty"),
        ([], "empty"),
        (["cache-1:5000"], "IP literals"),
        (["127.0.0.1"], "HOST:PORT"),
        (["127.0.0.1:5000", "[::1]:5000"], "all IPv4 or all IPv6"),
    ],
)
def test_bad_targets(target: str | list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_target(target)


def test_watch_backoff_grows_with_jitter_and_resets() -> None:
    backoff = reconnect_backoff(WatchConfig(initial_backoff=0.1, max_backoff=1.0))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [min(1.0, 0.1 * 2**i) for i in range(8)]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 0.1
