"""Targets and channels.

A target is what gRPC's name resolution understands: `"host:port"`, `"dns:///name:port"`,
`"ipv4:10.0.0.1:50051,10.0.0.2:50051"`, `"unix:/path"`. A *list* of addresses becomes one
static `ipv4:` (or `ipv6:`) target, which gRPC load-balances over with round_robin by
default: that is the one built-in way to give gRPC a fixed address list. A list of host
names cannot be expressed that way; name them with one DNS name instead (`dns:///`
resolves every address record of it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import grpc
from grpc import aio

from hybridcache.client._config import ClientConfig, channel_options

Target = str | Sequence[str]


def _split_host_port(address: str) -> tuple[str, str]:
    if address.startswith("["):  # [v6]:port
        host, sep, port = address[1:].partition("]:")
    else:
        host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address {address!r} is not HOST:PORT (IPv6: [ADDR]:PORT)")
    return host, port


def resolve_target(target: Target) -> tuple[str, bool]:
    """Return (gRPC target string, whether it names several addresses)."""
    if isinstance(target, str):
        if not target.strip():
            raise ValueError("empty target")
        return target, target.startswith(("ipv4:", "ipv6:")) and "," in target
    addresses = list(target)
    if not addresses:
        raise ValueError("empty list of addresses")
    families: set[int] = set()
    normalised: list[str] = []
    for address in addresses:
        host, port = _split_host_port(address)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                f"{address!r}: a list of addresses must hold IP literals; "
                "for host names use one 'dns:///NAME:PORT' target"
            ) from None
        families.add(ip.version)
        normalised.append(f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}")
    if len(families) > 1:
        raise ValueError("a list of addresses must be all IPv4 or all IPv6 (gRPC's ipv4:/ipv6: schemes)")
    scheme = "ipv6" if families == {6} else "ipv4"
    return f"{scheme}:{','.join(normalised)}", len(normalised) > 1


def _credentials(config: ClientConfig) -> Any:
    tls = config.tls
    assert tls is not None
    return grpc.ssl_channel_credentials(
        root_certificates=tls.root_certificates,
        private_key=tls.private_key,
        certificate_chain=tls.certificate_chain,
    )


def create_channel(target: Target, config: ClientConfig) -> grpc.Channel:
    address, multi = resolve_target(target)
    options = channel_options(config, multi_address=multi)
    if config.tls is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, _credentials(config), options=options)


def create_aio_channel(target: Target, config: ClientConfig) -> aio.Channel:
    address, multi = resolve_target(target)
    options = channel_options(config, multi_address=multi)
    if config.tls is None:
        return aio.insecure_channel(address, options=options)
    return aio.secure_channel(address, _credentials(config), options=options)
