"""Resume tokens are sealed: they round-trip in their own instance only, reveal no position
(two tokens of one position differ; nothing in a token grows with the sequence), and
anything tampered with is a ValueError."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridcache.server.hub import ResumePoint, TokenSealer, instance_of


@given(
    instance=st.text("abcdefABCDEF0123456789_-", min_size=1, max_size=64),
    sequence=st.integers(0, 2**63 - 1),
)
def test_round_trip(instance: str, sequence: int) -> None:
    sealer = TokenSealer(instance)
    token = sealer.seal(sequence)
    assert sealer.open(token) == ResumePoint(instance, sequence)
    assert instance_of(token) == instance
    assert len(token) <= 120


def test_tokens_reveal_no_position() -> None:
    sealer = TokenSealer("inst")
    tokens = [sealer.seal(n) for n in (0, 1, 1, 2**40)]
    assert len(set(tokens)) == 4, "one position, yet the same token twice"
    assert len({len(t) for t in tokens}) == 1, "a token's length shows the sequence"


def test_another_instances_token_is_foreign_not_malformed() -> None:
    mine, theirs = TokenSealer("mine"), TokenSealer("theirs")
    assert mine.open(theirs.seal(5)) == ResumePoint("theirs", None)


def test_a_token_of_the_same_instance_id_from_another_run_does_not_open() -> None:
    """A new process with a configured (stable) instance id has a new key: an old token is
    refused, never misread as a position."""
    with pytest.raises(ValueError, match="malformed resume token"):
        TokenSealer("stable").open(TokenSealer("stable").seal(5))


def _flip(token: str, index: int) -> str:
    head, sealed = token.split(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4)))
    raw[index] ^= 0x01
    return f"{head}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"


@pytest.mark.parametrize("index", [0, 11, 12, 20, -1])
def test_tampered_tokens_are_value_errors(index: int) -> None:
    sealer = TokenSealer("inst")
    with pytest.raises(ValueError, match="malformed resume token"):
        sealer.open(_flip(sealer.seal(7), index))


@pytest.mark.parametrize(
    "token",
    [
        "",
        "!!!!",
        "a" * 121,
        "inst",
        "inst.",
        ".abc",
        "inst.abc=",
        "in.st.abc",
        "inst.AAAA",
        "inst\u00e9.AAAA",
    ],
)
def test_malformed_tokens_are_value_errors(token: str) -> None:
    with pytest.raises(ValueError, match="malformed resume token"):
        TokenSealer("inst").open(token)


@pytest.mark.parametrize(("instance", "sequence"), [("", 1), ("a:b", 1), ("a.b", 1), ("a", -1), ("a", 2**63)])
def test_seal_refuses_what_open_would(instance: str, sequence: int) -> None:
    with pytest.raises(ValueError, match="must"):
        TokenSealer(instance).seal(sequence)
