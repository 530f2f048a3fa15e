"""Client configuration: frozen dataclasses, and the channel options they turn into."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata as _metadata
from typing import Any

from hybridcache.v1 import hybridcache_pb2

_SERVICE = hybridcache_pb2.DESCRIPTOR.services_by_name["HybridCache"]

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """TLS for the channel. Leave every field None to trust the system's roots."""

    root_certificates: bytes | None = None
    """PEM roots to verify the server with; None uses gRPC's default roots."""

    private_key: bytes | None = None
    """PEM private key for client authentication (mutual TLS); needs certificate_chain."""

    certificate_chain: bytes | None = None
    """PEM certificate chain for client authentication (mutual TLS); needs private_key."""

    server_name_override: str | None = None
    """Name to verify the server certificate against instead of the target's host.
    For tests and for addressing servers by IP; never to paper over a wrong certificate."""

    def __post_init__(self) -> None:
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError("TLSConfig: private_key and certificate_chain go together")


@dataclass(frozen=True, slots=True)
class KeepAliveConfig:
    """HTTP/2 keepalive pings, so a dead connection is noticed without waiting for a call.

    The server must permit pings this frequent (its
    `grpc.http2.min_recv_ping_interval_without_data_ms`), or it answers with GOAWAY
    "too_many_pings".
    """

    interval: float = 30.0
    """Seconds between pings on a connection with calls in flight."""

    timeout: float = 15.0
    """Seconds to wait for a ping's answer before the connection is considered dead."""

    permit_without_calls: bool = False
    """Also ping when no call is in flight (keeps idle connections warm; costs pings)."""

    def __post_init__(self) -> None:
        if self.interval < 1 or self.timeout <= 0:
            raise ValueError("KeepAliveConfig: interval must be >= 1 s and timeout > 0")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Transparent retries of unary calls, done by gRPC itself (service config).

    Only UNAVAILABLE is retried: it is the one code the server uses for "a retry may
    help", and every unary RPC of the API is a read, so repeating it is safe. Streams are
    not covered: `watch()` reconnects by itself.
    """

    max_attempts: int = 4
    """Attempts in all, the first included (3-5; gRPC caps it at 5)."""

    initial_backoff: float = 0.1
    """Seconds before the first retry (gRPC picks uniformly in [0, backoff])."""

    max_backoff: float = 1.0
    """Upper bound of the backoff, in seconds."""

    backoff_multiplier: float = 2.0
    """Factor the backoff grows by after each retry."""

    def __post_init__(self) -> None:
        if not 3 <= self.max_attempts <= 5:
            raise ValueError("RetryPolicy.max_attempts must be 3-5")
        if self.initial_backoff <= 0 or self.max_backoff < self.initial_backoff:
            raise ValueError("RetryPolicy: need 0 < initial_backoff <= max_backoff")
        if self.backoff_multiplier < 1:
            raise ValueError("RetryPolicy.backoff_multiplier must be >= 1")


@dataclass(frozen=True, slots=True)
class WatchConfig:
    """How `watch()` keeps its stream alive."""

    idle_timeout: float = 30.0
    """Seconds without any message (the server sends a Progress heartbeat every few
    seconds) after which the stream is presumed dead and reopened from the last token.
    Also bounds how long a connection attempt may hang."""

    initial_backoff: float = 0.2
    """Seconds before the first reconnect after a failure."""

    max_backoff: float = 10.0
    """Upper bound of the reconnect backoff, in seconds. Each wait is drawn between half
    the current backoff and the backoff ("equal jitter"), so clients that lost the same
    server do not come back in lockstep."""

    max_batch: int = 256
    """Up to how many changes the server may pack into one stream message (the request's
    `max_batch`; the server clamps it to 1,000). Batches only form when changes queue up,
    so they cost an idle stream nothing and spare a busy one a message per change; the
    stream still yields one event at a time. 1: ask for no batches."""

    def __post_init__(self) -> None:
        if self.idle_timeout <= 0:
            raise ValueError("WatchConfig.idle_timeout must be > 0")
        if self.max_batch < 1:
            raise ValueError("WatchConfig.max_batch must be >= 1")
        if self.initial_backoff <= 0 or self.max_backoff < self.initial_backoff:
            raise ValueError("WatchConfig: need 0 < initial_backoff <= max_backoff")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Everything a HybridCacheClient / AsyncHybridCacheClient needs besides its target."""

    default_timeout: float | None = 2.0
    """Deadline in seconds for every unary call that does not pass its own `timeout`.
    None: no deadline (not recommended: a call could then wait forever)."""

    bearer_token: str | None = None
    """Sent as `authorization: Bearer <token>` metadata on every call, streams included."""

    tls: TLSConfig | None = None
    """TLS settings; None: a plaintext channel (loopback, or inside a service mesh)."""

    keepalive: KeepAliveConfig | None = field(default_factory=KeepAliveConfig)
    """Keepalive pings; None: gRPC's defaults (no pings)."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    """Largest message sent or received (gRPC's default is 4 MiB)."""

    load_balancing_policy: str | None = None
    """"pick_first" or "round_robin". None: round_robin for a list of addresses, gRPC's
    default (pick_first) for a single target."""

    retry: RetryPolicy | None = field(default_factory=RetryPolicy)
    """Retries of unary calls on UNAVAILABLE; None: no retries."""

    wait_for_ready: bool = False
    """False: fail fast (UNAVAILABLE, then retried) while no connection can be made.
    True: calls wait for a connection until their deadline."""

    watch: WatchConfig = field(default_factory=WatchConfig)
    """Reconnect and heartbeat settings of `watch()`."""

    channel_options: Sequence[tuple[str, Any]] = ()
    """Extra gRPC channel arguments, appended last (so they win)."""

    def __post_init__(self) -> None:
        if self.default_timeout is not None and self.default_timeout <= 0:
            raise ValueError("ClientConfig.default_timeout must be > 0 or None")
        if self.max_message_bytes <= 0:
            raise ValueError("ClientConfig.max_message_bytes must be > 0")
        if self.load_balancing_policy not in (None, "pick_first", "round_robin"):
            raise ValueError("ClientConfig.load_balancing_policy: 'pick_first' or 'round_robin'")
        if self.bearer_token is not None:
            _check_bearer_token(self.bearer_token)


def _check_bearer_token(token: str) -> None:
    """Refuse, now, a token gRPC cannot send (else every call fails INTERNAL "Invalid metadata").

    A metadata value is printable ASCII (space to `~`); the server strips the token, so
    surrounding spaces would make it another token. The message never repeats the token.
    """
    if not token or "\n" in token:
        raise ValueError("ClientConfig.bearer_token must be a non-empty single line")
    for position, char in enumerate(token):
        if not " " <= char <= "~":
            raise ValueError(
                f"ClientConfig.bearer_token has a character gRPC metadata cannot carry at position "
                f"{position} (U+{ord(char):04X}): only printable ASCII is allowed"
            )
    if token != token.strip():
        raise ValueError("ClientConfig.bearer_token has leading or trailing spaces")


def _duration(seconds: float) -> str:
    # Service config durations are proto3-JSON Durations: decimal seconds with an "s".
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def service_config(config: ClientConfig, *, multi_address: bool) -> dict[str, Any]:
    """The gRPC service config (as a dict) carrying the retry and LB policies."""
    result: dict[str, Any] = {}
    policy = config.load_balancing_policy or ("round_robin" if multi_address else None)
    if policy is not None:
        result["loadBalancingConfig"] = [{policy: {}}]
    if config.retry is not None:
        retry = config.retry
        # Unary methods only, named one by one from the descriptor: a retry policy on the
        # server stream would only cover the time before its first message anyway, and
        # `watch()` has its own reconnect loop.
        unary = [
            {"service": _SERVICE.full_name, "method": method.name}
            for method in _SERVICE.methods
            if not method.client_streaming and not method.server_streaming
        ]
        result["methodConfig"] = [
            {
                "name": unary,
                "retryPolicy": {
                    "maxAttempts": retry.max_attempts,
                    "initialBackoff": _duration(retry.initial_backoff),
                    "maxBackoff": _duration(retry.max_backoff),
                    "backoffMultiplier": retry.backoff_multiplier,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
        # Throttling stops retries (not first attempts) once failures dominate, so a
        # fleet of clients does not triple the load on a server that is already failing.
        result["retryThrottling"] = {"maxTokens": 10, "tokenRatio": 0.1}
    return result


def _user_agent() -> str:
    try:
        return f"hybridcache-client/{_metadata.version('hybridcache-client')}"
    except _metadata.PackageNotFoundError:  # running from a source tree
        return "hybridcache-client"


def channel_options(config: ClientConfig, *, multi_address: bool) -> list[tuple[str, Any]]:
    """gRPC channel arguments for `config`."""
    options: list[tuple[str, Any]] = [
        ("grpc.primary_user_agent", _user_agent()),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.enable_retries", 1 if config.retry is not None else 0),
        ("grpc.service_config", json.dumps(service_config(config, multi_address=multi_address))),
    ]
    if config.keepalive is not None:
        keepalive = config.keepalive
        options += [
            ("grpc.keepalive_time_ms", int(keepalive.interval * 1000)),
            ("grpc.keepalive_timeout_ms", int(keepalive.timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", int(keepalive.permit_without_calls)),
            # Without this, gRPC stops pinging after 2 pings with no data in between,
            # which is exactly the quiet-but-open watch stream keepalive is for.
            ("grpc.http2.max_pings_without_data", 0),
        ]
    if config.tls is not None and config.tls.server_name_override:
        options.append(("grpc.ssl_target_name_override", config.tls.server_name_override))
    options.extend(config.channel_options)
    return options


def call_metadata(config: ClientConfig) -> tuple[tuple[str, str], ...]:
    """Metadata sent with every call."""
    if config.bearer_token is None:
        return ()
    return (("authorization", f"Bearer {config.bearer_token}"),)
