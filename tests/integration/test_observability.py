"""Metrics and logs: the Prometheus endpoint serves what operators need and moves with use;
logs never carry tokens, secrets or profile fields."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import httpx
import pytest

from hybridcache.server.api.auth import token_sha256
from hybridcache.server.app import Service
from hybridcache.server.ops.readiness import wait_serving
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from hybridcache_dev.stack.redis_process import RedisProcess, free_port
from hybridcache_dev.wrapper import launch
from tests.conftest import WRAPPER_TOKEN, service_settings
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(120)

EXPECTED_METRICS = [  # metric family names as declared in `# TYPE` lines
    "grpc_server_started",
    "grpc_server_handled",
    "grpc_server_handling_seconds",
    "hybridcache_cache_requests",
    "hybridcache_cache_entries",
    "hybridcache_wrapper_fetch_seconds",
    "hybridcache_event_lag_seconds",
    "hybridcache_events",
    "hybridcache_events_rejected",
    "hybridcache_resyncs",
    "hybridcache_freshness_live",
    "hybridcache_replica_age_seconds",
    "hybridcache_stream_subscribers",
    "hybridcache_stream_resync_required",
    "hybridcache_rate_limited",
]


def declared(port: int) -> set[str]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        line.split()[2].removesuffix("_total") for line in text.splitlines() if line.startswith("# TYPE ")
    }


def scrape(port: int) -> dict[str, float]:
    """Every sample of /metrics as {"name{labels}": value}."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def value(samples: dict[str, float], name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for key, sample in samples.items():
        if key.split("{")[0] == name and all(w in key for w in want):
            total += sample
    return total


def test_metrics_endpoint_serves_the_names_and_they_move(
    start_service: Callable[..., Service], dev_wrapper: Any, redis_server: RedisProcess
) -> None:
    port = free_port()
    service = start_service(service_settings(dev_wrapper.url, redis_server.url, metrics_port=port))
    before = scrape(port)
    names = declared(port)
    missing = [name for name in EXPECTED_METRICS if name not in names]
    assert not missing, f"/metrics lacks {missing}"
    assert not any(re.search(r"user-\d", key) for key in before), "user ids must never be metric labels"

    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = pb_grpc.HybridCacheStub(channel)
        for _ in range(5):
            stub.GetCreditCost(
                pb.GetCreditCostRequest(tenant_id="acme", operation_code="crm.leads.read"), timeout=5
            )
        stub.GetUserProfile(pb.GetUserProfileRequest(tenant_id="acme", user_id="user-3"), timeout=5)
        with pytest.raises(grpc.RpcError):
            stub.GetCreditCost(pb.GetCreditCostRequest(tenant_id="", operation_code="x"), timeout=5)
        with WrapperAdmin(dev_wrapper.url, WRAPPER_TOKEN) as admin:
            admin.put_cost("acme", "crm.leads.read", "1.75")
        with redis_server.client() as client:
            client.publish("crm:acme:credit-config-changed", b"{not json")

        def counted(metrics: dict[str, float]) -> bool:
            # The change may be applied by the repair worker (a refetch), after the malformed
            # event behind it is counted: wait for both, not for the later one alone.
            return (
                value(metrics, "hybridcache_events_rejected_total", reason="malformed-json") >= 1
                and value(metrics, "hybridcache_events_total", outcome="applied") >= 1
                and value(metrics, "hybridcache_event_lag_seconds_count") >= 1
            )

        wait_for(
            lambda: counted(scrape(port)),
            timeout=15,
            what="the change applied and the malformed event counted",
        )
    after = scrape(port)
    method = {"grpc_method": "GetCreditCost"}
    assert (
        value(after, "grpc_server_started_total", **method)
        - value(before, "grpc_server_started_total", **method)
        >= 6
    )
    assert (
        value(after, "grpc_server_handled_total", grpc_method="GetCreditCost", grpc_code="INVALID_ARGUMENT")
        >= 1
    )
    assert value(after, "hybridcache_cache_requests_total", kind="credit-costs", result="hit") >= 5
    assert value(after, "hybridcache_cache_requests_total", kind="user-profiles", result="miss") >= 1
    assert value(after, "hybridcache_wrapper_fetch_seconds_count") > value(
        before, "hybridcache_wrapper_fetch_seconds_count"
    )
    assert value(after, "hybridcache_event_lag_seconds_count") >= 1
    assert value(after, "hybridcache_events_total", outcome="applied") >= 1
    assert value(after, "hybridcache_replica_age_seconds", tenant="acme") >= 0
    assert value(after, "hybridcache_freshness_live") == 1.0


def _freshness_answered(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        reply = pb_grpc.HybridCacheStub(channel).GetCreditCost(
            pb.GetCreditCostRequest(tenant_id="acme", operation_code="crm.leads.read"), timeout=5
        )
    return int(reply.provenance.freshness)


def test_freshness_degraded_follows_the_answers_and_failed_resyncs_are_counted(
    start_service: Callable[..., Service], own_redis: RedisProcess, tmp_path: Path
) -> None:
    """Redis killed: hybridcache_freshness_degraded 1, as the answers say; Redis back while
    the Wrapper is down: the resync fails (counted) and it stays 1; Wrapper back: 0, LIVE."""
    wrapper_port = free_port()
    db = str(tmp_path / "wrapper.db")
    wrapper = launch(own_redis.url, token=WRAPPER_TOKEN, db_path=db, port=wrapper_port)
    try:
        port = free_port()
        service = start_service(service_settings(wrapper.url, own_redis.url, metrics_port=port))
        target = f"127.0.0.1:{service.port}"

        def gauges() -> tuple[float, float]:
            samples = scrape(port)
            live = value(samples, "hybridcache_freshness_live")
            return value(samples, "hybridcache_freshness_degraded"), live

        wait_for(
            lambda: gauges() == (0.0, 1.0), timeout=30, interval=0.05, what="degraded 0, live 1 at start"
        )
        assert _freshness_answered(target) == pb.FRESHNESS_LIVE
        assert value(scrape(port), "hybridcache_resync_failures_total") == 0

        own_redis.kill()
        wait_for(lambda: gauges() == (1.0, 0.0), timeout=30, interval=0.05, what="degraded 1, Redis killed")
        assert _freshness_answered(target) == pb.FRESHNESS_DEGRADED, "the gauge says degraded, the answer not"

        wrapper.stop()
        own_redis.start()  # reconnects, then its resync fails: the Wrapper is down
        wait_for(
            lambda: value(scrape(port), "hybridcache_resync_failures_total") >= 1,
            timeout=60,
            interval=0.1,
            what="the failed resync counted in hybridcache_resync_failures_total",
        )
        assert value(scrape(port), "hybridcache_redis_reconnects_total") >= 1
        assert gauges() == (1.0, 0.0), "not resynced yet: answers may miss the changes made meanwhile"
        assert _freshness_answered(target) == pb.FRESHNESS_DEGRADED

        wrapper = launch(own_redis.url, token=WRAPPER_TOKEN, db_path=db, port=wrapper_port)
        wait_for(lambda: gauges() == (0.0, 1.0), timeout=60, interval=0.1, what="degraded 0 once resynced")
        assert _freshness_answered(target) == pb.FRESHNESS_LIVE
    finally:
        wrapper.stop()


# --- logs: canaries in tokens, secrets and profiles must never appear

CANARY_CALLER_TOKEN = "CANARY-caller-token-7f3a"
CANARY_WRAPPER_TOKEN = "CANARY-wrapper-token-91bc"
CANARY_HMAC = "CANARY-hmac-key-55d0"
CANARY_PROFILE = {"email": "canary-0e1f@example.test", "phone": "+1-555-CANARY", "title": "CANARY-title-aa12"}
CANARIES = [CANARY_CALLER_TOKEN, CANARY_WRAPPER_TOKEN, CANARY_HMAC, *CANARY_PROFILE.values(), "CANARY"]


class LoggedServer(NamedTuple):
    """A `hybridcache serve` process whose stdout and stderr go to `log_path`."""

    target: str
    log_path: Path
    wrapper: Any
    metrics_port: int


@pytest.fixture
def logged_server(own_redis: RedisProcess) -> Iterator[LoggedServer]:
    with tempfile.TemporaryDirectory(prefix="hybridcache-logs-") as tmp:
        wrapper = launch(own_redis.url, token=CANARY_WRAPPER_TOKEN, db_path=str(Path(tmp) / "w.db"))
        port, metrics_port = free_port(), free_port()
        log_path = Path(tmp) / "server.log"
        env = {
            **os.environ,
            "HYBRIDCACHE_HOST": "127.0.0.1",
            "HYBRIDCACHE_PORT": str(port),
            "HYBRIDCACHE_METRICS_PORT": str(metrics_port),
            "HYBRIDCACHE_WRAPPER_URL": wrapper.url,
            "HYBRIDCACHE_WRAPPER_TOKEN": CANARY_WRAPPER_TOKEN,
            "HYBRIDCACHE_REDIS_URL": own_redis.url,
            "HYBRIDCACHE_TENANTS": "acme",
            "HYBRIDCACHE_CALLERS": json.dumps(
                [{"name": "crm", "token_sha256": token_sha256(CANARY_CALLER_TOKEN), "tenants": ["acme"]}]
            ),
            "HYBRIDCACHE_LOG_LEVEL": "debug",
            "HYBRIDCACHE_LOG_FORMAT": "json",
        }
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "hybridcache.server.cli", "serve"], env=env, stdout=log, stderr=log
            )
            try:
                try:
                    wait_serving(f"127.0.0.1:{port}", timeout=60, alive=lambda: server.poll() is None)
                except (RuntimeError, TimeoutError) as exc:
                    raise AssertionError(f"{exc}; its log:\n{log_path.read_text()[-3000:]}") from None
                # Lines leave the server together, up to HYBRIDCACHE_LOG_FLUSH_INTERVAL_S late:
                # once "listening" is in the file, so is every start-up line logged before it,
                # and a test that counts lines from here counts only its own.
                wait_for(
                    lambda: b'"event": "listening"' in log_path.read_bytes(),
                    timeout=20,
                    what="the server's start-up lines in its log",
                )
                yield LoggedServer(f"127.0.0.1:{port}", log_path, wrapper, metrics_port)
            finally:
                server.terminate()
                server.wait(20)
                wrapper.stop()


def test_logs_carry_no_tokens_secrets_or_profile_fields(logged_server: LoggedServer) -> None:
    target, log_path, wrapper, _ = logged_server
    with WrapperAdmin(wrapper.url, CANARY_WRAPPER_TOKEN) as admin:
        admin.patch_profile("acme", "user-4", **CANARY_PROFILE)
    good = (("authorization", f"Bearer {CANARY_CALLER_TOKEN}"),)
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.HybridCacheStub(channel)
        reply = stub.GetUserProfile(
            pb.GetUserProfileRequest(tenant_id="acme", user_id="user-4"), metadata=good, timeout=5
        )
        assert reply.user_profile.email == CANARY_PROFILE["email"]
        for metadata in (
            (("authorization", f"Bearer {CANARY_CALLER_TOKEN}x"),),
            (("authorization", "CANARY"),),
        ):
            with pytest.raises(grpc.RpcError):
                stub.GetUserProfile(
                    pb.GetUserProfileRequest(tenant_id="acme", user_id="user-4"), metadata=metadata
                )
        with pytest.raises(grpc.RpcError):
            stub.GetUserProfile(pb.GetUserProfileRequest(tenant_id="acme", user_id="CANARY x"), metadata=good)
        with WrapperAdmin(wrapper.url, CANARY_WRAPPER_TOKEN) as admin:
            admin.patch_profile("acme", "user-4", title="CANARY-title-2")
        wait_for(
            lambda: (
                stub.GetUserProfile(
                    pb.GetUserProfileRequest(tenant_id="acme", user_id="user-4"), metadata=good, timeout=5
                ).user_profile.title
                == "CANARY-title-2"
            ),
            timeout=5,
            what="the profile change applied",
        )
    logs = log_path.read_text()
    assert re.search(r'"method": "GetUserProfile"', logs), f"expected one line per RPC, got:\n{logs[-2000:]}"
    rpc_lines = [json.loads(line) for line in logs.splitlines() if line.startswith('{"event": "rpc"')]
    assert [(line["caller"], line["code"]) for line in rpc_lines[:4]] == [
        ("crm", "OK"),
        ("-", "UNAUTHENTICATED"),
        ("-", "UNAUTHENTICATED"),
        ("crm", "INVALID_ARGUMENT"),
    ]
    fields = ["event", "level", "logger", "timestamp", "caller", "method", "code", "duration_ms"]
    for line in rpc_lines:
        assert list(line) == fields
        assert (line["level"], line["logger"]) == ("info", "hybridcache.rpc")
        assert line["method"] == "GetUserProfile"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", line["timestamp"])
        assert isinstance(line["duration_ms"], float)
    found = [canary for canary in CANARIES if canary in logs]
    assert not found, f"log contains {found}"


def test_a_stream_the_client_ends_is_logged_cancelled(logged_server: LoggedServer) -> None:
    target, log_path = logged_server.target, logged_server.log_path
    good = (("authorization", f"Bearer {CANARY_CALLER_TOKEN}"),)
    with grpc.insecure_channel(target) as channel:
        stream = pb_grpc.HybridCacheStub(channel).WatchChanges(
            pb.WatchChangesRequest(tenant_ids=["acme"]), metadata=good
        )
        assert next(stream).WhichOneof("message") == "progress"  # the stream is open
        stream.cancel()

    def watch_lines() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in log_path.read_text().splitlines() if '"event": "rpc"' in line]
        return [line for line in lines if line["method"] == "WatchChanges"]

    logged = wait_for(watch_lines, timeout=20, what="the WatchChanges stream's log line")
    assert [(line["caller"], line["code"]) for line in logged] == [("crm", "CANCELLED")]
