"""Signing: the canonical form a JavaScript publisher produces, round trip, and every refusal."""

from __future__ import annotations

import hashlib
import hmac
import json
import re

import pytest

from hybridcache.server.events.signing import SignatureError, sign, verify

KEY = b"shared-secret"
NOW = 1_700_000_000_000
BODY = '{"eventId":"e-1","eventType":"credit-config-changed","tenantId":"acme","data":{"newValue":3}}'


def test_the_signed_message_is_the_body_with_a_trailing_member() -> None:
    signed = sign(BODY, KEY, NOW)
    # Exactly what the JavaScript one-liner in signing.py's docstring produces.
    expected_mac = hmac.new(KEY, f"{NOW}.{BODY}".encode(), hashlib.sha256).hexdigest()
    assert signed == BODY[:-1] + f',"signature":"t={NOW},v1={expected_mac}"}}'
    assert json.loads(signed)["signature"].startswith(f"t={NOW},v1=")
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", json.loads(signed)["signature"])


def test_round_trip_returns_the_signed_bytes_exactly() -> None:
    assert verify(sign(BODY, KEY, NOW).encode(), [KEY], NOW) == BODY.encode()


def test_string_keys_and_non_ascii_bodies() -> None:
    body = '{"eventId":"é-1","data":{}}'
    assert verify(sign(body, "shared-secret", NOW).encode(), [KEY], NOW + 1000) == body.encode()


@pytest.mark.parametrize("skew_ms", [-300_000, 0, 300_000])
def test_timestamps_within_the_window_pass(skew_ms: int) -> None:
    verify(sign(BODY, KEY, NOW + skew_ms).encode(), [KEY], NOW)


@pytest.mark.parametrize(
    ("case", "message", "keys", "error"),
    [
        ("unsigned", BODY, [KEY], "no signature"),
        ("tampered body", sign(BODY, KEY, NOW).replace('"newValue":3', '"newValue":4'), [KEY], "no key"),
        ("tampered time", sign(BODY, KEY, NOW).replace(f"t={NOW}", f"t={NOW + 1}"), [KEY], "no key"),
        ("expired", sign(BODY, KEY, NOW - 300_001), [KEY], "window"),
        ("future", sign(BODY, KEY, NOW + 300_001), [KEY], "window"),
        ("unknown key", sign(BODY, b"other", NOW), [KEY], "no key"),
        ("no keys", sign(BODY, KEY, NOW), [], "no key"),
        (
            "upper-case hex",
            re.sub(r"v1=([0-9a-f]+)", lambda m: "v1=" + m[1].upper(), sign(BODY, KEY, NOW)),
            [KEY],
            "malformed",
        ),
        ("short mac", sign(BODY, KEY, NOW)[:-4] + '"}', [KEY], "malformed"),
        ("trailing newline", sign(BODY, KEY, NOW) + "\n", [KEY], "no signature"),
    ],
)
def test_refusals(case: str, message: str, keys: list[bytes], error: str) -> None:
    with pytest.raises(SignatureError, match=error):
        verify(message.encode(), keys, NOW)


def test_rotation_any_listed_key_verifies() -> None:
    for key in (b"old", b"new"):
        assert verify(sign(BODY, key, NOW).encode(), [b"new", b"old"], NOW) == BODY.encode()


def test_a_custom_window() -> None:
    with pytest.raises(SignatureError):
        verify(sign(BODY, KEY, NOW - 2000).encode(), [KEY], NOW, window_ms=1000)


@pytest.mark.parametrize("bad", ["{}", "[1]", ' {"a":1}', '{"a":1} ', "{ }"])
def test_sign_refuses_what_it_cannot_extend(bad: str) -> None:
    with pytest.raises(ValueError, match="JSON object"):
        sign(bad, KEY, NOW)
