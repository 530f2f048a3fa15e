"""The client side of `hybridcache health`: one grpc.health.v1 Check, plaintext or TLS.

With TLS on (HYBRIDCACHE_TLS_CERT_FILE) the check runs where the server runs, so by default
it trusts the server's own certificate file (right for a self-signed certificate, or a file
that carries its chain up to the root; otherwise pass the CA), and verifies the name that
certificate holds (its first DNS subjectAltName, else its CN), read in a TLS handshake that
verifies the certificate first. With mTLS (HYBRIDCACHE_TLS_CLIENT_CA_FILE) it presents the
server's own certificate and key as its client certificate unless told another: that works
when the client CA also signed the server's certificate.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybridcache.server.config import Settings

TIMEOUT_S = 2.0  # the Dockerfile's HEALTHCHECK gives the whole command 3 s


@dataclass(frozen=True)
class HealthTLS:
    ca_file: str
    server_name: str | None = None  # None: the name in the server's certificate
    client_cert: str | None = None
    client_key: str | None = None

    @classmethod
    def for_server(
        cls,
        settings: Settings,
        *,
        ca_file: str | None = None,
        server_name: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
    ) -> HealthTLS | None:
        """How to reach the server these settings configure (None: it serves plaintext)."""
        if not settings.tls_cert_file:
            return None
        mutual = bool(settings.tls_client_ca_file) or client_cert is not None
        return cls(
            ca_file=ca_file or settings.tls_cert_file,
            server_name=server_name,
            client_cert=(client_cert or settings.tls_cert_file) if mutual else None,
            client_key=(client_key or settings.tls_key_file) if mutual else None,
        )


def check_health(target: str, tls: HealthTLS | None) -> tuple[bool, str]:
    """(SERVING?, what to print): the status name, or why there is none."""
    try:
        channel = _channel(target, tls)
    except (OSError, ssl.SSLError, ValueError) as exc:
        return False, f"TLS: {exc}"
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S
            )
        except grpc.RpcError as exc:
            return False, f"{exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def _channel(target: str, tls: HealthTLS | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(target)
    name = tls.server_name or certificate_name(target, tls)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(tls.ca_file).read_bytes(),
        private_key=Path(tls.client_key).read_bytes() if tls.client_key else None,
        certificate_chain=Path(tls.client_cert).read_bytes() if tls.client_cert else None,
    )
    return grpc.secure_channel(target, credentials, options=[("grpc.ssl_target_name_override", name)])


def certificate_name(target: str, tls: HealthTLS) -> str:
    """The name in the certificate the server at `target` presents, verified against tls.ca_file."""
    host, _, port = target.rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain (CERT_REQUIRED)
    context.check_hostname = False  # the name is what we are here to learn
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a leaf in ca_file is a trust anchor
    context.load_verify_locations(cafile=tls.ca_file)
    if tls.client_cert:
        context.load_cert_chain(tls.client_cert, tls.client_key)
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host.strip("[]"), int(port)), timeout=TIMEOUT_S) as raw,
        context.wrap_socket(raw) as conn,
    ):
        certificate: dict[str, Any] = dict(conn.getpeercert() or {})
    dns_names = [value for kind, value in certificate.get("subjectAltName", ()) if kind == "DNS"]
    if dns_names:
        return str(dns_names[0])
    for rdn in certificate.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    raise ValueError("the server's certificate names no DNS name and no CN; pass --tls-server-name")
