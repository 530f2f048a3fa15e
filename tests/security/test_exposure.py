"""What the service exposes, and to whom: reflection only to authenticated callers in secure
mode (and not at all when switched off), /metrics over TLS when TLS is on, and a caller
bound to its client certificate. In-process servers on port 0, real TLS from openssl."""

from __future__ import annotations

import shutil
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from hybridcache.server.app import Service
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.stack.redis_process import RedisProcess, free_port
from tests.conftest import service_settings
from tests.integration.test_rpcs import error_reason
from tests.integration.test_tls import self_signed
from tests.security.conftest import ACME_TOKEN, CALLERS

pytestmark = pytest.mark.timeout(90)
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def list_services(
    channel: grpc.Channel,
    metadata: tuple[tuple[str, str], ...] = (),
    package: str = "grpc.reflection.v1alpha",
) -> list[str]:
    info = channel.stream_stream(  # v1 and v1alpha share their messages (the same bytes)
        f"/{package}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    replies = info(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata, timeout=5
    )
    return [s.name for reply in replies for s in reply.list_services_response.service]


@pytest.mark.parametrize("package", ["grpc.reflection.v1", "grpc.reflection.v1alpha"])
def test_reflection_needs_credentials_in_secure_mode_and_can_be_turned_off(
    start_service: Callable[..., Service], dev_wrapper: Any, redis_server: RedisProcess, package: str
) -> None:
    """Both names reflection answers under are gated alike (a v1 face left outside the gate
    would be an unauthenticated stream on the server's default pool)."""
    secure = start_service(
        service_settings(dev_wrapper.url, redis_server.url, insecure_dev_mode=False, callers=CALLERS)
    )
    with grpc.insecure_channel(f"127.0.0.1:{secure.port}") as channel:
        with pytest.raises(grpc.RpcError) as refused:
            list_services(channel, package=package)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        listed = list_services(channel, (("authorization", f"Bearer {ACME_TOKEN}"),), package)
        assert "hybridcache.v1.HybridCache" in listed

    off = start_service(
        service_settings(
            dev_wrapper.url, redis_server.url, insecure_dev_mode=False, callers=CALLERS, reflection=False
        )
    )
    with grpc.insecure_channel(f"127.0.0.1:{off.port}") as channel, pytest.raises(grpc.RpcError) as absent:
        list_services(channel, (("authorization", f"Bearer {ACME_TOKEN}"),), package)
    assert absent.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_an_idle_reflection_stream_is_cancelled_after_the_timeout(
    start_service: Callable[..., Service], dev_wrapper: Any, redis_server: RedisProcess
) -> None:
    service = start_service(
        service_settings(
            dev_wrapper.url,
            redis_server.url,
            insecure_dev_mode=False,
            callers=CALLERS,
            request_message_timeout_s=1.0,
        )
    )
    hang = threading.Event()

    def one_request_then_idle() -> Any:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        hang.wait(30)  # the caller keeps the stream open and says nothing more

    started = time.monotonic()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            # Any: the grpc_reflection stubs leave ServerReflectionInfo `Incomplete`.
            stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = stub.ServerReflectionInfo(
                one_request_then_idle(), metadata=(("authorization", f"Bearer {ACME_TOKEN}"),), timeout=20
            )
            assert next(replies).list_services_response.service, "the first request was not answered"
            with pytest.raises(grpc.RpcError) as ended:
                next(replies)
    finally:
        hang.set()
    assert ended.value.code() == grpc.StatusCode.CANCELLED, ended.value
    assert time.monotonic() - started < 5, "the idle reflection stream kept its thread past the timeout"


@needs_openssl
def test_metrics_are_served_over_tls_when_tls_is_on(
    start_service: Callable[..., Service], dev_wrapper: Any, redis_server: RedisProcess, tmp_path: Path
) -> None:
    key, cert = self_signed(tmp_path, "hybridcache.test")
    port = free_port()
    start_service(
        service_settings(
            dev_wrapper.url,
            redis_server.url,
            tenants=[],
            tls_cert_file=str(cert),
            tls_key_file=str(key),
            metrics_port=port,
        )
    )
    with pytest.raises(httpx.TransportError):  # no plain HTTP beside the TLS port
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False  # the certificate names hybridcache.test, we dial 127.0.0.1
    scraped = httpx.get(f"https://127.0.0.1:{port}/metrics", verify=context, timeout=5)
    assert scraped.status_code == 200
    assert "grpc_server_started" in scraped.text

    local_port = free_port()
    start_service(
        service_settings(
            dev_wrapper.url,
            redis_server.url,
            tenants=[],
            tls_cert_file=str(cert),
            tls_key_file=str(key),
            metrics_port=local_port,
            metrics_localhost_plain=True,
        )
    )
    assert httpx.get(f"http://127.0.0.1:{local_port}/metrics", timeout=5).status_code == 200


@needs_openssl
def test_a_caller_bound_to_its_certificate_is_refused_with_another(
    start_service: Callable[..., Service], dev_wrapper: Any, redis_server: RedisProcess, tmp_path: Path
) -> None:
    server_key, server_cert = self_signed(tmp_path, "hybridcache.test")
    own_key, own_cert = self_signed(tmp_path, "crm.client.test")
    other_key, other_cert = self_signed(tmp_path, "other.client.test")
    client_ca = tmp_path / "clients.pem"  # both self-signed client certificates are trusted
    client_ca.write_bytes(own_cert.read_bytes() + other_cert.read_bytes())
    callers = [{**CALLERS[0], "tls_identity": "crm.client.test"}, *CALLERS[1:]]
    service = start_service(
        service_settings(
            dev_wrapper.url,
            redis_server.url,
            tenants=[],
            insecure_dev_mode=False,
            callers=callers,
            tls_cert_file=str(server_cert),
            tls_key_file=str(server_key),
            tls_client_ca_file=str(client_ca),
        )
    )
    request = pb.GetCreditCostRequest(tenant_id="acme", operation_code="crm.leads.create")
    metadata = (("authorization", f"Bearer {ACME_TOKEN}"),)

    def call_with(key: Path, cert: Path) -> pb.GetCreditCostResponse:
        credentials = grpc.ssl_channel_credentials(
            server_cert.read_bytes(), key.read_bytes(), cert.read_bytes()
        )
        options = (("grpc.ssl_target_name_override", "hybridcache.test"),)
        with grpc.secure_channel(f"127.0.0.1:{service.port}", credentials, options) as channel:
            reply: pb.GetCreditCostResponse = pb_grpc.HybridCacheStub(channel).GetCreditCost(
                request, metadata=metadata, timeout=10
            )
            return reply

    assert call_with(own_key, own_cert).credit_cost.operation_code == "crm.leads.create"
    with pytest.raises(grpc.RpcError) as refused:
        call_with(other_key, other_cert)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(refused.value) == "CERTIFICATE_MISMATCH"
