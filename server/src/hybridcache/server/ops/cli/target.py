"""Where and how an operator command connects: the same credentials as `hybridcache-client`.

A bearer token is taken from a file (`--token-file`) or the HYBRIDCACHE_TOKEN environment
variable, never from a command-line value, which any user of the machine could read in the
process list. Any `--tls-*` option (or `--tls`) turns TLS on; client certificate and key go
together (mutual TLS).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from hybridcache.client import ClientConfig, HybridCacheClient, TLSConfig

TOKEN_ENV = "HYBRIDCACHE_TOKEN"  # noqa: S105 - the variable's name, not a token
TARGET_ENV = "HYBRIDCACHE_TARGET"
DEFAULT_TARGET = "127.0.0.1:50051"


class TargetError(Exception):
    """A connection option is unusable (a file missing, a half-given key pair)."""


def add_target_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("target and credentials (as hybridcache-client's ClientConfig)")
    group.add_argument(
        "--target",
        default=os.environ.get(TARGET_ENV, DEFAULT_TARGET),
        help=f"host:port or any gRPC target (default ${TARGET_ENV} or {DEFAULT_TARGET})",
    )
    group.add_argument(
        "--token-file", type=Path, help=f"file holding the bearer token (default: ${TOKEN_ENV} when set)"
    )
    group.add_argument("--tls", action="store_true", help="TLS with the system's trusted roots")
    group.add_argument("--tls-ca", type=Path, help="PEM roots to verify the server with (implies TLS)")
    group.add_argument("--tls-cert", type=Path, help="PEM client certificate chain for mutual TLS")
    group.add_argument("--tls-key", type=Path, help="PEM client private key for mutual TLS")
    group.add_argument("--tls-server-name", help="name to verify the server certificate against")
    group.add_argument("--timeout", type=float, default=5.0, help="deadline of unary calls, seconds")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TargetError(f"cannot read {what} {path}: {exc.strerror}") from None


def client_config(args: argparse.Namespace) -> ClientConfig:
    token = os.environ.get(TOKEN_ENV) or None
    if args.token_file is not None:
        token = _read(args.token_file, "token file").decode().strip() or None
        if token is None:
            raise TargetError(f"token file {args.token_file} is empty")
    tls = None
    if args.tls or args.tls_ca or args.tls_cert or args.tls_key or args.tls_server_name:
        if (args.tls_cert is None) != (args.tls_key is None):
            raise TargetError("--tls-cert and --tls-key go together")
        tls = TLSConfig(
            root_certificates=_read(args.tls_ca, "CA file") if args.tls_ca else None,
            certificate_chain=_read(args.tls_cert, "certificate") if args.tls_cert else None,
            private_key=_read(args.tls_key, "key") if args.tls_key else None,
            server_name_override=args.tls_server_name,
        )
    return ClientConfig(default_timeout=args.timeout, bearer_token=token, tls=tls, retry=None)


def connect(args: argparse.Namespace) -> HybridCacheClient:
    return HybridCacheClient(args.target, client_config(args))
