"""TLS and mutual TLS on the real service: the server presents its certificate and, with a
client CA configured, refuses clients that do not present one it signed."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hybridcache.client import ClientConfig, HybridCacheClient, TLSConfig, Unavailable
from hybridcache.server.app import Service
from hybridcache_dev.stack.redis_process import RedisProcess
from tests.conftest import service_settings

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert)),
            *("-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return key, cert


def test_mutual_tls(
    start_service: Callable[..., Service], dev_wrapper: Any, redis_server: RedisProcess, tmp_path: Path
) -> None:
    server_key, server_cert = self_signed(tmp_path, "hybridcache.test")
    client_key, client_cert = self_signed(tmp_path, "crm.client.test")
    _, stranger_cert = self_signed(tmp_path, "stranger.test")
    service = start_service(
        service_settings(
            dev_wrapper.url,
            redis_server.url,
            tenants=[],  # health is checked over plaintext by the fixture: nothing to wait for
            tls_cert_file=str(server_cert),
            tls_key_file=str(server_key),
            tls_client_ca_file=str(client_cert),
        )
    )
    target = f"127.0.0.1:{service.port}"

    def client(**tls: Any) -> HybridCacheClient:
        config = TLSConfig(
            root_certificates=server_cert.read_bytes(), server_name_override="hybridcache.test", **tls
        )
        return HybridCacheClient(target, ClientConfig(tls=config, default_timeout=5))

    with client(private_key=client_key.read_bytes(), certificate_chain=client_cert.read_bytes()) as good:
        reply = good.get_credit_cost("acme", "crm.leads.create")
        assert reply.credit_cost.operation_code == "crm.leads.create"

    with client() as no_certificate, pytest.raises(Unavailable):
        no_certificate.get_credit_cost("acme", "crm.leads.create")

    stranger = client(private_key=client_key.read_bytes(), certificate_chain=stranger_cert.read_bytes())
    with stranger, pytest.raises(Unavailable):
        stranger.get_credit_cost("acme", "crm.leads.create")
