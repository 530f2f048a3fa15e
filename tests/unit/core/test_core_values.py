"""The core's value rules at their edges: exact decimals, policy checks, PII-free reprs."""

from __future__ import annotations

from decimal import Decimal

import pytest

from hybridcache.server.core import MISSING, Change, Kind, KindPolicy, Tier
from hybridcache.server.core.values import UserProfile, canonical_decimal


@pytest.mark.parametrize(
    ("raw", "canonical"), [("2.50", "2.5"), ("3.0", "3"), (3, "3"), (Decimal("-0.00"), "0"), ("1E+2", "100")]
)
def test_canonical_decimal(raw: str | int | Decimal, canonical: str) -> None:
    assert canonical_decimal(raw) == canonical


@pytest.mark.parametrize(
    ("raw", "message"),
    [(2.5, "binary float"), (True, "binary float"), ("abc", "not a decimal"), ("Infinity", "not a finite")],
)
def test_canonical_decimal_refuses_what_is_not_an_exact_finite_decimal(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        canonical_decimal(raw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ttl_s": 0}, "ttl_s must be > 0"),
        ({"negative_ttl_s": -1}, "must be >= 0"),
        ({"max_stale_s": -1}, "must be >= 0"),
        ({"refresh_ahead": 1.0}, "refresh_ahead"),
    ],
)
def test_policy_refuses_bad_numbers(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KindPolicy(Kind.USER_PROFILES, Tier.ON_DEMAND, **changes)  # type: ignore[arg-type]


def test_reprs_keep_profiles_out_of_logs() -> None:
    profile = UserProfile("u-1", "Ann Secret", "ann@example.com", "CEO", "Board", "org-1", "+1 555")
    change = Change("acme", Kind.USER_PROFILES, "u-1", profile, 3, False)
    for text in (repr(profile), repr(change)):
        assert "Ann Secret" not in text
        assert "ann@example.com" not in text
        assert "u-1" in text
    assert repr(MISSING) == "MISSING"
