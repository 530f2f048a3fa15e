"""`hybridcache health` (the image's HEALTHCHECK) against the real server: plaintext, TLS and
mTLS, configured only by the server's own HYBRIDCACHE_* variables, as in its container."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hybridcache.server.app import Service
from hybridcache_dev.stack.redis_process import RedisProcess, free_port
from tests.conftest import service_settings
from tests.integration.test_tls import self_signed

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]
HYBRIDCACHE = str(Path(sys.executable).parent / "hybridcache")
SERVER_NAME = "hybridcache.test"


def health(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`hybridcache health` with only `env` as its HYBRIDCACHE_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDCACHE_")}
    return subprocess.run(
        [HYBRIDCACHE, "health", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def certificates(tmp_path: Path) -> dict[str, Path]:
    server_key, server_cert = self_signed(tmp_path, SERVER_NAME)
    client_key, client_cert = self_signed(tmp_path, "crm.client.test")
    return {
        "server_key": server_key,
        "server_cert": server_cert,
        "client_key": client_key,
        "client_cert": client_cert,
    }


@pytest.fixture
def tls_service(
    start_service: Callable[..., Service], dev_wrapper: Any, redis_server: RedisProcess
) -> Callable[..., Service]:
    def start(**tls: str) -> Service:
        return start_service(service_settings(dev_wrapper.url, redis_server.url, tenants=[], **tls))

    return start


def test_plaintext_serving_exits_zero_and_nothing_listening_exits_one(
    tls_service: Callable[..., Service],
) -> None:
    service = tls_service()
    done = health({"HYBRIDCACHE_PORT": str(service.port)})
    assert (done.returncode, done.stdout.strip()) == (
        0,
        f"hybridcache health: 127.0.0.1:{service.port}: SERVING",
    )
    dead = health({"HYBRIDCACHE_PORT": str(free_port())})
    assert dead.returncode == 1
    assert "UNAVAILABLE" in dead.stderr


def test_tls_server_is_checked_over_tls_from_its_own_settings(
    tls_service: Callable[..., Service], certificates: dict[str, Path]
) -> None:
    tls = {"tls_cert_file": str(certificates["server_cert"]), "tls_key_file": str(certificates["server_key"])}
    service = tls_service(**tls)
    env = {f"HYBRIDCACHE_{k.upper()}": v for k, v in tls.items()} | {"HYBRIDCACHE_PORT": str(service.port)}
    done = health(env)
    # Before: a plaintext channel to a TLS port, UNAVAILABLE while the server was serving.
    assert done.returncode == 0, f"health failed against a serving TLS server: {done.stderr}"
    assert done.stdout.strip().endswith(": SERVING")
    # A certificate the server does not hold is refused: the check really verifies.
    wrong = health(env, "--tls-ca", str(certificates["client_cert"]), "--tls-server-name", SERVER_NAME)
    assert wrong.returncode == 1
    assert "UNAVAILABLE" in wrong.stderr


def test_mtls_presents_the_servers_certificate_or_the_one_given(
    tls_service: Callable[..., Service], certificates: dict[str, Path], tmp_path: Path
) -> None:
    # The client CA is the client's certificate: the server's own pair is no valid client.
    tls = {
        "tls_cert_file": str(certificates["server_cert"]),
        "tls_key_file": str(certificates["server_key"]),
        "tls_client_ca_file": str(certificates["client_cert"]),
    }
    service = tls_service(**tls)
    env = {f"HYBRIDCACHE_{k.upper()}": v for k, v in tls.items()} | {"HYBRIDCACHE_PORT": str(service.port)}
    refused = health(env)
    assert refused.returncode == 1, refused.stdout
    client = (
        "--tls-cert",
        str(certificates["client_cert"]),
        "--tls-key",
        str(certificates["client_key"]),
    )
    accepted = health(env, *client)
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.strip().endswith(": SERVING")


def test_mtls_with_one_ca_for_servers_and_clients_needs_no_options(
    tls_service: Callable[..., Service], certificates: dict[str, Path]
) -> None:
    # The server's certificate is also the client CA (one internal CA signs both).
    tls = {
        "tls_cert_file": str(certificates["server_cert"]),
        "tls_key_file": str(certificates["server_key"]),
        "tls_client_ca_file": str(certificates["server_cert"]),
    }
    service = tls_service(**tls)
    env = {f"HYBRIDCACHE_{k.upper()}": v for k, v in tls.items()} | {"HYBRIDCACHE_PORT": str(service.port)}
    done = health(env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(": SERVING")
