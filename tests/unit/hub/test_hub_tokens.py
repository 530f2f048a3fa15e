from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridcache.server.hub import ResumePoint, decode_token, encode_token


@given(
    instance=st.text("abcdefABCDEF0123456789_-", min_size=1, max_size=64),
    sequence=st.integers(0, 2**63 - 1),
)
def test_round_trip(instance: str, sequence: int) -> None:
    token = encode_token(instance, sequence)
    assert decode_token(token) == ResumePoint(instance, sequence)
    assert len(token) <= 120


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "token",
    [
        "",
        "!!!!",
        "a" * 121,
        "abc=",  # padding is never part of a token
        _b64(b"inst"),  # no separator
        _b64(b"inst:"),
        _b64(b":5"),
        _b64(b"inst:-1"),
        _b64(b"inst:05"),  # one position, one spelling
        _b64(b"inst:1e3"),
        _b64(b"in:st:5"),
        _b64(b"inst:9223372036854775808"),  # beyond int64
        _b64("inst\u00e9:5".encode()),
        _b64(b"\xff\xfe:5"),
    ],
)
def test_malformed_tokens_are_value_errors(token: str) -> None:
    with pytest.raises(ValueError, match="malformed resume token"):
        decode_token(token)


def test_non_canonical_base64_is_rejected() -> None:
    token = encode_token("abc", 7)  # "abc:7" is 5 bytes: the last char carries unused bits
    last = token[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = token[:-1] + alphabet[alphabet.index(last) + 1]
    assert base64.urlsafe_b64decode(twin + "===") == base64.urlsafe_b64decode(token + "===")
    with pytest.raises(ValueError, match="malformed"):
        decode_token(twin)


@pytest.mark.parametrize(("instance", "sequence"), [("", 1), ("a:b", 1), ("a", -1), ("a", 2**63)])
def test_encode_refuses_what_decode_would(instance: str, sequence: int) -> None:
    with pytest.raises(ValueError, match="must"):
        encode_token(instance, sequence)
