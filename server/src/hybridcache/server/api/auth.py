"""Caller authentication and tenant authorisation.

Callers present `authorization: Bearer <token>` metadata. Configuration names each caller
by the SHA-256 of its token (never the token itself) and lists the tenants it may read, or
`*`. A missing or unknown token is UNAUTHENTICATED; a tenant outside the caller's list is
PERMISSION_DENIED. Tenant ids in requests are never trusted on their own.

A caller entry with `tls_identity` is bound to its client certificate: its token is
accepted only on a connection whose certificate names that identity (mTLS), so a leaked
token is useless without the certificate's key too (checked by the gate).

`insecure_dev_mode` lets every call in as the caller "insecure-dev" with every tenant: the
dev stack uses it, and the server says so loudly at start.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from hybridcache.server.config_models import ALL_TENANTS, CallerEntry


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    all_tenants: bool
    tenants: frozenset[str]
    # With mTLS: the identity (certificate SAN or CN) its calls must present; None: any.
    tls_identity: str | None = None

    def may_read(self, tenant_id: str) -> bool:
        return self.all_tenants or tenant_id in self.tenants


INSECURE_CALLER = Caller(name="insecure-dev", all_tenants=True, tenants=frozenset())


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    """Maps a call's bearer token to a Caller. Thread-safe (read-only after construction)."""

    def __init__(self, callers: Iterable[CallerEntry], *, insecure: bool = False) -> None:
        # Entries are validated by the settings (config_models.CallerEntry): names and token
        # hashes are unique, tenant ids well-formed.
        self.insecure = insecure
        self._by_hash: dict[str, Caller] = {}
        self._entries: dict[str, CallerEntry] = {}
        for entry in callers:
            caller = Caller(
                name=entry.name,
                all_tenants=entry.all_tenants,
                tenants=frozenset(t for t in entry.tenants if t != ALL_TENANTS),
                tls_identity=entry.tls_identity,
            )
            self._by_hash[entry.token_sha256.lower()] = caller
            self._entries[caller.name] = entry
        # Tokens already proved, so a known caller's calls skip the SHA-256 (~1 µs each). Only
        # tokens that hashed to a configured caller enter it, so it holds at most one entry per
        # token in use and no caller can grow it; an unknown token is hashed every time.
        self._known: dict[str, Caller] = {}

    def identify(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Caller | None:
        """The caller a call's metadata proves, or None (missing or unknown token)."""
        if self.insecure:
            return INSECURE_CALLER
        token = bearer_token(metadata)
        if token is None:
            return None
        caller = self._known.get(token)
        if caller is None:
            caller = self._by_hash.get(token_sha256(token))
            if caller is not None:
                self._known[token] = caller
        return caller

    def entry(self, caller: Caller) -> CallerEntry | None:
        """The caller's own configuration entry (for per-caller limits); None when none."""
        return self._entries.get(caller.name)


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None
