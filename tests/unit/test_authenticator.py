"""The Authenticator: a proved token skips the hash on later calls; nothing else is remembered."""

from __future__ import annotations

import secrets

import pytest

from hybridcache.server.api.auth import Authenticator, token_sha256
from hybridcache.server.config_models import CallerEntry

pytestmark = pytest.mark.timeout(30)

TOKEN = "crm-token-0123456789"


def authenticator() -> Authenticator:
    entry = CallerEntry(name="crm", token_sha256=token_sha256(TOKEN), tenants=["acme"])
    return Authenticator([entry])


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_a_known_token_is_the_same_caller_on_every_call() -> None:
    auth = authenticator()
    first = auth.identify(bearer(TOKEN))
    assert first is not None
    assert first.name == "crm"
    assert first.may_read("acme")
    assert not first.may_read("globex")
    assert auth.identify(bearer(TOKEN)) is first
    assert auth.identify(bearer(TOKEN + "x")) is None, (
        "a token that merely starts like a known one was accepted"
    )


def test_unknown_tokens_are_never_remembered() -> None:
    auth = authenticator()
    for _ in range(10_000):
        assert auth.identify(bearer(secrets.token_hex(16))) is None
    auth.identify(bearer(TOKEN))
    assert len(auth._known) == 1, "unknown tokens grew the cache of proved tokens"
    assert auth.identify([("authorization", "Basic abc")]) is None
    assert auth.identify(None) is None
