"""The processes a user runs: `hybridcache serve` shuts down gracefully on SIGTERM, and
`hybridcache dev` brings up the whole stack, answers grpcurl, and stops it all on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybridcache.server.ops.readiness import wait_serving
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from hybridcache_dev.stack.redis_process import RedisProcess, free_port
from tests.conftest import WRAPPER_TOKEN
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def health_status(channel: grpc.Channel) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
    return int(reply.status)


def test_sigterm_drains_in_flight_calls_and_exits_zero(
    dev_wrapper: Any, redis_server: RedisProcess, tmp_path: Path
) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = {
        **os.environ,
        "HYBRIDCACHE_HOST": "127.0.0.1",
        "HYBRIDCACHE_PORT": str(port),
        "HYBRIDCACHE_WRAPPER_URL": dev_wrapper.url,
        "HYBRIDCACHE_WRAPPER_TOKEN": WRAPPER_TOKEN,
        "HYBRIDCACHE_REDIS_URL": redis_server.url,
        "HYBRIDCACHE_TENANTS": "acme",
        "HYBRIDCACHE_INSECURE_DEV_MODE": "true",
        "HYBRIDCACHE_GRACE_S": "5",
        "HYBRIDCACHE_DRAIN_S": "3",
    }
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen([str(BIN / "hybridcache"), "serve"], env=env, stdout=log, stderr=log)
    admin = WrapperAdmin(dev_wrapper.url, WRAPPER_TOKEN)
    try:
        wait_serving(target, timeout=60, alive=lambda: server.poll() is None)
        admin.set_faults(latencyMs=1500)
        result: dict[str, Any] = {}

        def slow_call() -> None:
            with grpc.insecure_channel(target) as channel:
                stub = pb_grpc.HybridCacheStub(channel)
                try:
                    result["reply"] = stub.GetUserProfile(
                        pb.GetUserProfileRequest(tenant_id="acme", user_id="user-17"), timeout=10
                    )
                except grpc.RpcError as exc:
                    result["error"] = exc

        caller = threading.Thread(target=slow_call)
        caller.start()
        wait_for(
            lambda: admin.stats()["total"] > 0,
            timeout=10,
            what="the slow call to reach the Wrapper",
        )
        with grpc.insecure_channel(target) as watcher:  # a balancer's connection, open before SIGTERM
            assert health_status(watcher) == health_pb2.HealthCheckResponse.SERVING
            server.send_signal(signal.SIGTERM)
            wait_for(
                lambda: health_status(watcher) == health_pb2.HealthCheckResponse.NOT_SERVING,
                timeout=2.5,
                what="health NOT_SERVING within the drain period after SIGTERM",
            )
        caller.join(15)
        assert "reply" in result, f"the in-flight call did not complete: {result.get('error')!r}"
        assert server.wait(15) == 0, "hybridcache serve must exit 0 after SIGTERM"
    finally:
        admin.clear_faults()
        admin.close()
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()


def test_dev_stack_runs_answers_grpcurl_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    output = tmp_path / "dev.out"
    with output.open("wb") as sink:
        stack = subprocess.Popen(
            [str(BIN / "hybridcache"), "dev", "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,  # the stack keeps its state in ./.devstack
        )
        try:
            wait_for(
                lambda: "Ctrl-C stops everything" in output.read_text(),
                timeout=90,
                what="the dev stack banner",
            )
            banner = output.read_text()
            wrapper_url = re.search(r"development Wrapper\s+(http://\S+)", banner)
            assert wrapper_url, banner
            listed = subprocess.run(
                [str(BIN / "grpcurl"), "-plaintext", f"127.0.0.1:{port}", "list"],
                capture_output=True, text=True, timeout=20, check=True,
            ).stdout  # fmt: skip
            assert "hybridcache.v1.HybridCache" in listed
            answer = subprocess.run(
                [str(BIN / "grpcurl"), "-plaintext",
                 "-d", '{"tenant_id":"acme","operation_code":"crm.leads.create"}',
                 f"127.0.0.1:{port}", "hybridcache.v1.HybridCache/GetCreditCost"],
                capture_output=True, text=True, timeout=20, check=True,
            ).stdout  # fmt: skip
            assert '"operation_code": "crm.leads.create"' in answer
            stack.send_signal(signal.SIGINT)
            assert stack.wait(30) == 0, output.read_text()[-2000:]
        finally:
            if stack.poll() is None:
                stack.kill()
                stack.wait()
    assert "hybridcache dev stack stopped" in output.read_text()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{wrapper_url.group(1)}/healthz", timeout=2)
