"""`hybridcache stats` and `hybridcache watch` as an operator runs them: the real command in
a subprocess against a real server that checks credentials (bearer token, mutual TLS)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from hybridcache.client import ClientConfig, HybridCacheClient
from hybridcache.server.api.auth import token_sha256
from hybridcache.server.app import Service
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from hybridcache_dev.stack.redis_process import RedisProcess
from tests.conftest import WRAPPER_TOKEN, service_settings
from tests.integration.test_tls import self_signed

pytestmark = pytest.mark.timeout(120)

TOKEN = "operator-token-for-tests"
CALLERS = [{"name": "operator", "token_sha256": token_sha256(TOKEN), "tenants": ["*"]}]


def hybridcache(*args: str, env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hybridcache.server.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        **popen,
    )


def finished(process: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


@pytest.fixture
def secured(start_service: Callable[..., Service], dev_wrapper: Any, redis_server: RedisProcess) -> Service:
    return start_service(
        service_settings(
            dev_wrapper.url, redis_server.url, insecure_dev_mode=False, callers=CALLERS, watch_heartbeat_s=0.2
        )
    )


def test_stats_prints_a_table_of_the_servers_counters(secured: Service) -> None:
    target = f"127.0.0.1:{secured.port}"
    with HybridCacheClient(target, ClientConfig(bearer_token=TOKEN)) as client:
        for _ in range(3):
            client.get_credit_cost("acme", "crm.leads.read")
    code, out, err = finished(hybridcache("stats", "--target", target, env={"HYBRIDCACHE_TOKEN": TOKEN}))
    assert code == 0, err
    assert f"{target}  freshness LIVE" in out, out
    assert "tenants loaded: acme, globex" in out, out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1]}
    assert rows["KIND"][:2] == ["KIND", "TIER"], out
    credit = rows["credit-costs"]
    assert credit[1] == "replica", out
    assert int(credit[2].replace(",", "")) >= 3, f"the 3 reads are not counted as hits:\n{out}"
    assert rows["user-profiles"][1] == "on-demand", out
    assert rows["user-profiles"][-1] == "300", f"the on-demand TTL column should say 300 s:\n{out}"


def test_stats_from_a_token_file_as_json(secured: Service, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    process = hybridcache(
        "stats", "--target", f"127.0.0.1:{secured.port}", "--token-file", str(token_file), "--json"
    )
    code, out, err = finished(process)
    assert code == 0, err
    answer = json.loads(out)
    assert {kind["kind"] for kind in answer["kinds"]} >= {"KIND_CREDIT_COSTS", "KIND_USER_PROFILES"}
    assert answer["freshness"] == "FRESHNESS_LIVE"


def test_stats_without_credentials_says_so_and_leaks_nothing(secured: Service, tmp_path: Path) -> None:
    code, out, err = finished(hybridcache("stats", "--target", f"127.0.0.1:{secured.port}",
                                          env={"HYBRIDCACHE_TOKEN": ""}))  # fmt: skip
    assert code == 1, (out, err)
    assert "UNAUTHENTICATED" in err, err
    assert "Traceback" not in err, err
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token")
    code, _, err = finished(
        hybridcache("stats", "--target", f"127.0.0.1:{secured.port}", "--token-file", str(wrong))
    )
    assert code == 1, err
    assert "not-the-token" not in err, "the token must never be printed"
    code, _, err = finished(hybridcache("stats", "--token-file", str(tmp_path / "missing")))
    assert code == 2, err
    assert "cannot read token file" in err, err


def test_stats_over_mutual_tls(
    start_service: Callable[..., Service], dev_wrapper: Any, redis_server: RedisProcess, tmp_path: Path
) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("the TLS test needs the openssl command")
    server_key, server_cert = self_signed(tmp_path, "hybridcache.test")
    client_key, client_cert = self_signed(tmp_path, "ops.client.test")
    service = start_service(
        service_settings(
            dev_wrapper.url, redis_server.url, tenants=[], tls_cert_file=str(server_cert),
            tls_key_file=str(server_key), tls_client_ca_file=str(client_cert),
        )
    )  # fmt: skip
    target = ("--target", f"127.0.0.1:{service.port}", "--tls-ca", str(server_cert),
              "--tls-server-name", "hybridcache.test")  # fmt: skip
    code, out, err = finished(
        hybridcache("stats", *target, "--tls-cert", str(client_cert), "--tls-key", str(client_key))
    )
    assert code == 0, err
    assert "credit-costs" in out, out
    code, _, err = finished(hybridcache("stats", *target))  # no client certificate: refused
    assert code == 1, err
    assert "UNAVAILABLE" in err, err
    code, _, err = finished(hybridcache("stats", *target, "--tls-cert", str(client_cert)))
    assert code == 2, err
    assert "--tls-cert and --tls-key go together" in err, err


def lines_of(stream: IO[str]) -> queue.Queue[str]:
    """The lines of a subprocess pipe, read by a thread so the test can wait with a timeout."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_line(lines: queue.Queue[str], needle: str, timeout: float = 20) -> str:
    seen = []
    try:
        while True:
            line = lines.get(timeout=timeout)
            seen.append(line)
            if needle in line:
                return line
    except queue.Empty:
        raise AssertionError(f"no line with {needle!r} within {timeout} s; saw {seen}") from None


@pytest.fixture
def watcher(secured: Service) -> Iterator[subprocess.Popen[str]]:
    process = hybridcache(
        "watch", "--target", f"127.0.0.1:{secured.port}", "--tenant", "acme", "--kind", "credit-costs",
        "--prefix", "crm.leads.", "--count", "1", env={"HYBRIDCACHE_TOKEN": TOKEN},
    )  # fmt: skip
    yield process
    if process.poll() is None:
        process.kill()
        process.wait(10)


def put_cost(wrapper_url: str, tenant: str, code: str, cost: str) -> None:
    with WrapperAdmin(wrapper_url, WRAPPER_TOKEN) as admin:
        admin.put_cost(tenant, code, cost)


def test_watch_prints_only_the_filtered_changes_with_a_progress_line(
    watcher: subprocess.Popen[str], dev_wrapper: Any
) -> None:
    assert watcher.stderr is not None
    progress = lines_of(watcher.stderr)
    wait_line(progress, "heartbeat ")  # subscribed: the server's heartbeat came through
    put_cost(dev_wrapper.url, "globex", "crm.leads.read", "7.25")  # another tenant: filtered out
    put_cost(dev_wrapper.url, "acme", "crm.deals.create", "8.5")  # another prefix: filtered out
    put_cost(dev_wrapper.url, "acme", "crm.leads.read", "3.5")
    # --count 1: it stops after the first change. communicate() and the pump thread both read
    # stderr, so the final progress line is in whichever got it: look in both.
    out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, out
    changes = out.splitlines()
    assert len(changes) == 1, f"expected exactly the one acme crm.leads.* change, got {changes}"
    assert "  acme  credit-costs  crm.leads.read  v" in changes[0], changes[0]
    assert "cost=3.5" in changes[0], changes[0]
    assert "(credit-config-changed)" in changes[0], changes[0]
    final = err.splitlines()
    while not progress.empty():
        final.append(progress.get())
    assert any(line.startswith("1 changes (") and "resume token" in line for line in final), final
