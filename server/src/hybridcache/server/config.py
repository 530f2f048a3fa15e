"""Server configuration: `HYBRIDCACHE_*` environment variables, typed and validated at start.

Every field here is one row of the README's configuration table (a test keeps the two in
step). A bad value stops start-up with one line naming the variable (`load_settings`).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hybridcache.server.api.validation import check_tenant_id
from hybridcache.server.config_models import CallerEntry, KindPolicyOverride, check_unique_callers
from hybridcache.server.core.errors import InvalidRequest
from hybridcache.server.core.kinds import Kind, Tier
from hybridcache.server.core.policy import DEFAULT_POLICIES
from hybridcache.server.hub.tokens import parse_fleet_key

ENV_PREFIX = "HYBRIDCACHE_"

# HYBRIDCACHE_* variables that are not server settings: the operator commands' (ops/cli/target.py).
# An operator's shell may well have them set; they are not misspelt settings.
NOT_SETTINGS = frozenset({"HYBRIDCACHE_TOKEN", "HYBRIDCACHE_TARGET"})

_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")
_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # no ':' or glob characters: channels


class ConfigError(Exception):
    """A configuration value is invalid; the message names the environment variable."""


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """The server's settings. Field `x` is read from `HYBRIDCACHE_X`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # --- gRPC server
    host: str = Field("0.0.0.0", description="Address the gRPC server binds.")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port (0: pick a free one).")
    rpc_workers: int = Field(
        32,
        ge=1,
        le=256,
        description="Threads for unary RPCs, their own: streams, reflection and health run on "
        "threads of their own (docs/SECURITY.md).",
    )
    gc_freeze: bool = Field(
        True,
        description="After replica loads, collect once and freeze the heap, so the garbage "
        "collector stops rescanning replicas (a ~50 ms pause per 100k objects otherwise).",
    )
    max_streams: int = Field(
        100, ge=0, le=10_000, description="Open WatchChanges streams allowed in total (each holds a thread)."
    )
    max_streams_per_caller: int = Field(20, ge=1, description="Open WatchChanges streams per caller.")
    max_concurrent_rpcs: int = Field(
        1000,
        ge=1,
        description="Unary RPCs admitted at once, running or waiting for a thread; beyond it "
        "callers get RESOURCE_EXHAUSTED at once.",
    )
    max_message_bytes: int = Field(
        1 << 20, ge=1024, description="Largest request or response message, in bytes."
    )
    grace_s: float = Field(10.0, ge=0, description="On SIGTERM, how long in-flight RPCs may take to finish.")
    drain_s: float = Field(
        2.0,
        ge=0,
        description=(
            "On SIGTERM, how long health says NOT_SERVING while still taking calls, so balancers move away."
        ),
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "Server processes sharing the port (SO_REUSEPORT), each a full replica; worker i serves "
            "/metrics on METRICS_PORT + i. Needs a fixed PORT."
        ),
    )

    # --- Wrapper (authority, HTTP)
    wrapper_url: str = Field("http://127.0.0.1:8080", description="Base URL of the Wrapper's HTTP API.")
    wrapper_token: SecretStr = Field(
        SecretStr(""), description="Bearer token for the Wrapper (never logged)."
    )
    wrapper_timeout_s: float = Field(
        2.0, gt=0, le=60, description="Longest single Wrapper call (shortened to the caller's deadline)."
    )
    wrapper_retries: int = Field(
        2, ge=0, le=10, description="Retries of a failed idempotent Wrapper read (jittered backoff)."
    )
    wrapper_max_connections: int = Field(32, ge=1, description="Pooled HTTP connections to the Wrapper.")
    # Circuit breaker per Wrapper endpoint kind (wrapper/health.py; docs/RELIABILITY.md, 8d)
    wrapper_breaker_failures: int = Field(
        3,
        ge=0,
        description="Failed calls in a row to one Wrapper endpoint kind that open its circuit breaker: "
        "calls then fail at once and stale-eligible reads answer stale at once (0: no breaker).",
    )
    wrapper_breaker_reset_s: float = Field(
        2.0, gt=0, description="How long an open breaker waits before letting one probe call through."
    )
    # Wrapper mapping: a Wrapper with its own API (wrapper/mapping.py; docs/WRAPPER.md)
    wrapper_map: str = Field(
        "",
        description="YAML file mapping the Wrapper's URLs, paging and JSON fields onto the kinds "
        "(empty: hybridcache's own Wrapper API, docs/wrapper-api.yaml).",
    )

    @field_validator("wrapper_map", mode="after")
    @classmethod
    def _wrapper_map(cls, value: str) -> str:
        if value:
            from hybridcache.server.wrapper.mapping import load_map  # noqa: PLC0415 (only when set)

            load_map(value)  # MappingError (a ValueError): one line naming file, kind and field
        return value

    @model_validator(mode="after")
    def _replicated_kinds_listed(self) -> Self:
        # A replicated kind loads by listing: a mapping without its list endpoint stops start-up.
        if self.wrapper_map:
            from hybridcache.server.wrapper.mapping import load_map  # noqa: PLC0415

            kinds = load_map(self.wrapper_map).kinds
            for kind, default in DEFAULT_POLICIES.items():
                override = self.kind_policies.get(kind)
                tier = override.apply(default).tier if override else default.tier
                if tier is Tier.REPLICA and (kind not in kinds or kinds[kind].list is None):
                    raise ValueError(
                        f"{ENV_PREFIX}WRAPPER_MAP: {self.wrapper_map}: {kind}: list: needed, "
                        f"{kind} is replicated (map its list endpoint, or make it on-demand in "
                        f"{ENV_PREFIX}KIND_POLICIES)"
                    )
        return self

    # --- What is cached, and how
    tenants: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Tenants whose replica loads at start (comma-separated); health is SERVING once loaded.",
    )
    kind_policies: Annotated[dict[Kind, KindPolicyOverride], NoDecode] = Field(
        default_factory=dict,
        description='Per-kind overrides as JSON, e.g. {"user-profiles": {"ttl_s": 60, "when_down": "fail"}}.',
    )
    max_reference_entries: int = Field(
        100_000, ge=1, description="Most on-demand entries kept (LRU beyond it)."
    )
    refresh_interval_s: float = Field(
        600.0, ge=0, description="Full replica refresh period, jittered ±10% (0: off)."
    )

    # --- Change notifications (Redis)
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis for change notifications: redis://, rediss://, unix://, redis+sentinel://h:p[,h:p]/name.",
    )
    event_apps: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["crm"], description="Apps whose channels `{app}:{tenant}:{event}` are read."
    )
    event_mode: Literal["pubsub", "stream"] = Field(
        "pubsub", description="pubsub (at-most-once, resync on every gap) or stream (durable, resumes)."
    )
    event_max_bytes: int = Field(65536, ge=256, description="Largest change notification accepted.")
    # Versions that cannot be poisoned (core/replica.py; docs/RELIABILITY.md, 8b)
    event_version_window: int = Field(
        1000,
        ge=0,
        description="An event whose version exceeds the highest seen for its tenant and kind by more "
        "than this is not applied; the key is refetched from the Wrapper instead (0: no limit).",
    )
    event_hmac_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="When set (comma-separated), events must be signed with one of them.",
    )
    resync_jitter_s: float = Field(
        1.0,
        ge=0,
        description="Longest random delay before a resync after a gap, so a fleet does not stampede "
        "(after a shared gap: 0.2 s per replica resubscribing ahead, up to this).",
    )
    max_concurrent_snapshot_loads: int = Field(
        2,
        ge=0,
        description="Snapshot loads from the Wrapper in progress at once in this process (0: no cap).",
    )

    # --- Anti-entropy (events/verifier.py): replicas compared with the Wrapper's digests
    verify_interval_s: float = Field(
        30.0,
        ge=0,
        description="Longest wait between two comparisons of every replica with the Wrapper's digests "
        "(each wait is random in [0.75, 1] x this); a difference is repaired from the Wrapper (0: off).",
    )
    verify_buckets: int = Field(
        256,
        ge=1,
        le=4096,
        description="Digest buckets per tenant and kind (a power of two): a mismatch re-reads one bucket.",
    )

    # --- Fleet resume tokens (durable mode)
    resume_token_key: SecretStr = Field(
        SecretStr(""),
        description="Base64 AES key (16/24/32 bytes) every replica shares: in stream mode with one "
        "event app, resume tokens then carry the stream position and resume on any replica "
        "(needed with more than one replica; empty: tokens bound to one process). Never logged.",
    )

    # --- WatchChanges
    watch_retain: int = Field(10_000, ge=1, description="Change events kept for resuming streams.")
    watch_subscriber_buffer: int = Field(
        1000, ge=1, description="Events buffered per stream before it is told to resync."
    )
    watch_heartbeat_s: float = Field(5.0, gt=0, description="Idle stream heartbeat (Progress) interval.")
    watch_messages_per_s: float = Field(
        5000.0,
        ge=0,
        description="Batched WatchChanges streams together send about this many messages a second "
        "at most: under load each holds its next one until (open streams / this) after its last, "
        "gathering changes meanwhile; an idle stream sends at once (0: no pacing).",
    )

    # --- Security
    insecure_dev_mode: bool = Field(
        False, description="Accept calls without credentials and allow every tenant. Development only."
    )
    callers: Annotated[list[CallerEntry], NoDecode] = Field(
        default_factory=list,
        description=(
            'JSON list of callers: [{"name": "crm", "token_sha256": "<hex>", "tenants": ["acme"] or ["*"], '
            '"rate_per_s"?, "burst"?, "max_in_flight"?, "tls_identity"?}]; tls_identity binds the caller '
            "to its client certificate's SAN or CN (mTLS)."
        ),
    )

    caller_rate_per_s: float = Field(
        1000.0,
        ge=0,
        description="Per-caller request rate limit (token bucket; 0: off). A caller entry may set its own. "
        "In insecure dev mode (one caller for every call) this and the in-flight cap apply only when set.",
    )
    caller_burst: int = Field(200, ge=1, description="Per-caller token-bucket burst size.")
    caller_max_in_flight: int = Field(
        16,
        ge=0,
        description="Per-caller cap on unary RPCs in progress or waiting (0: off); keep it below "
        "HYBRIDCACHE_RPC_WORKERS so no caller holds every thread. A caller entry may set its own.",
    )
    tls_cert_file: str = Field("", description="Server certificate (PEM); with the key, serve TLS.")
    tls_key_file: str = Field("", description="Server private key (PEM).")
    tls_client_ca_file: str = Field(
        "", description="CA bundle (PEM) for client certificates; when set, clients must present one (mTLS)."
    )

    # --- Capacity before authentication, and what is exposed (docs/SECURITY.md)
    max_streams_per_connection: int = Field(
        1000,
        ge=1,
        description="HTTP/2 streams one connection may have open at once (a client multiplexing "
        "more waits for a free one).",
    )
    request_message_timeout_s: float = Field(
        5.0,
        gt=0,
        description="A call whose request message has not arrived this long after it got a thread "
        "is cancelled (health: 1 s at most).",
    )
    health_workers: int = Field(
        2,
        ge=1,
        le=64,
        description="Threads answering grpc.health.v1 (Check; as many again for Watch), their own.",
    )
    health_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="A port answering only grpc.health.v1 Check, plain text, on grpc.aio: no flood of "
        "idle calls can take its answers (point probes here; 0: off).",
    )
    reflection: bool = Field(
        True,
        description="Serve gRPC server reflection (grpcurl list); authenticated callers only in secure mode.",
    )
    reflection_workers: int = Field(2, ge=1, le=64, description="Threads for reflection streams, their own.")
    metrics_localhost_plain: bool = Field(
        False,
        description="With TLS on, serve /metrics as plain HTTP on 127.0.0.1 (a sidecar scraper) instead "
        "of over TLS with the gRPC certificate.",
    )

    # --- Operations
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port (0: off).")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: console on a TTY, JSON otherwise."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_rpcs: bool = Field(True, description="One log line per RPC (caller, method, code, duration).")
    log_flush_interval_s: float = Field(
        0.1,
        ge=0,
        le=5,
        description="JSON log lines are written together at most this long after they were logged "
        "(one write per interval, not per line); 0: each line at once. Lost on SIGKILL.",
    )

    @field_validator("verify_buckets")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("must be a power of two")
        return value

    @field_validator("resume_token_key")
    @classmethod
    def _resume_token_key_is_a_key(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value():
            parse_fleet_key(value.get_secret_value())  # ValueError says what is wrong, not the key
        return value

    @field_validator("tenants", "event_apps", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("event_hmac_keys", mode="before")
    @classmethod
    def _comma_secrets(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("tenants")
    @classmethod
    def _tenant_ids(cls, value: list[str]) -> list[str]:
        for tenant in value:
            try:
                check_tenant_id(tenant)
            except InvalidRequest as exc:
                raise ValueError(f"{tenant!r}: {exc}") from None
        return value

    @field_validator("kind_policies", "callers", mode="before")
    @classmethod
    def _json(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            if not value.strip():
                return {} if info.field_name == "kind_policies" else []  # unset
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"invalid JSON: {exc}") from None
        return value

    @field_validator("kind_policies", mode="after")
    @classmethod
    def _possible_policies(cls, value: dict[Kind, KindPolicyOverride]) -> dict[Kind, KindPolicyOverride]:
        # Build each policy now, so an impossible one (e.g. replicating a kind the Wrapper
        # has no snapshot of) stops start-up with a message naming this variable.
        for kind, override in value.items():
            override.apply(DEFAULT_POLICIES[kind])
        return value

    @field_validator("callers", mode="after")
    @classmethod
    def _unique_callers(cls, value: list[CallerEntry]) -> list[CallerEntry]:
        return check_unique_callers(value)

    @field_validator("event_apps", mode="after")
    @classmethod
    def _apps(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("names no app: give at least one (e.g. crm)")
        for app in value:
            if not _APP_NAME.match(app):
                raise ValueError(f"{app!r} is not an app name (letters, digits, '.', '_', '-')")
        return value

    @field_validator("redis_url", mode="after")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in _REDIS_SCHEMES:
            raise ValueError(
                f"scheme {parts.scheme + '://' if parts.scheme else '(none)'} is not one of "
                + ", ".join(f"{scheme}://" for scheme in _REDIS_SCHEMES)
            )
        if parts.scheme == "redis+sentinel":
            from hybridcache.server.events.connection import parse_sentinel_url  # noqa: PLC0415 (redis-py)

            parse_sentinel_url(value)  # ValueError names what is wrong
        elif parts.scheme == "unix" and not parts.path:
            raise ValueError("a unix:// URL needs the socket's path (unix:///path/to/redis.sock)")
        elif parts.scheme != "unix" and not parts.hostname:
            raise ValueError(f"no host in it ({parts.scheme}://host:port/db)")
        return value

    @field_validator("tls_cert_file", "tls_key_file", "tls_client_ca_file", mode="after")
    @classmethod
    def _readable_file(cls, value: str) -> str:
        if value:
            try:
                with Path(value).open("rb") as handle:
                    handle.read(1)
            except OSError as exc:
                raise ValueError(f"cannot read {value}: {exc.strerror or exc}") from None
        return value

    @model_validator(mode="after")
    def _tls_pairs(self) -> Self:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            given, missing = (
                ("TLS_CERT_FILE", "TLS_KEY_FILE") if self.tls_cert_file else ("TLS_KEY_FILE", "TLS_CERT_FILE")
            )
            raise ValueError(f"{ENV_PREFIX}{missing}: needed with {ENV_PREFIX}{given}")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError(
                f"{ENV_PREFIX}TLS_CLIENT_CA_FILE: client certificates need TLS: "
                f"set {ENV_PREFIX}TLS_CERT_FILE and {ENV_PREFIX}TLS_KEY_FILE"
            )
        return self


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings; raise ConfigError naming the first bad variable."""
    try:
        if env is None:
            return Settings()
        scoped = {k[len(ENV_PREFIX) :].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
        return Settings.model_validate(scoped)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    """The first error as `HYBRIDCACHE_X: where inside it: what is wrong` (never the value:
    it may be a secret)."""
    error = exc.errors()[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a check across variables names them itself
        return message
    field, *inside = error["loc"]
    if error["type"] == "extra_forbidden":
        key = str(inside.pop())
        close = difflib.get_close_matches(key, _JSON_KEYS.get(str(field), ()), n=1)
        message = f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    elif error["type"] == "missing":
        message = f"{inside.pop()!r} is required"
    where = "".join(f"entry {part}: " if isinstance(part, int) else f"{part}: " for part in inside)
    return f"{ENV_PREFIX}{str(field).upper()}: {where}{message}".replace("\n", " ")


# The keys of the JSON-valued settings' entries, for "did you mean" hints.
_JSON_KEYS = {
    "callers": tuple(CallerEntry.model_fields),
    "kind_policies": tuple(KindPolicyOverride.model_fields),
}


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """One line per HYBRIDCACHE_* variable that is no setting (a misspelling does nothing)."""
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    lines = []
    env = {k: v for k, v in env.items() if k not in NOT_SETTINGS}
    for name in sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known):
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        lines.append(f"{name} is not a setting and is ignored{hint}")
    return lines


def config_warnings(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """Settings that are valid but probably not what was meant, one line each."""
    warnings = unknown_variables(env)
    if not settings.insecure_dev_mode and not settings.callers:
        warnings.append(
            f"{ENV_PREFIX}CALLERS is empty: every call will be refused (UNAUTHENTICATED); "
            f"list the callers, or set {ENV_PREFIX}INSECURE_DEV_MODE=true for development"
        )
    return warnings
