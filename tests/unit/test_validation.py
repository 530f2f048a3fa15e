from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridcache.server.api.validation import (
    MAX_BATCH,
    check_batch,
    check_key,
    check_tenant_id,
    check_user_id,
)
from hybridcache.server.core.errors import InvalidRequest

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("good", ["acme", "a", "t-1.x_y", "A" * 64])
def test_good_tenants(good: str) -> None:
    assert check_tenant_id(good) == good


@pytest.mark.parametrize(
    ("bad", "reason"),
    [("", "FIELD_REQUIRED"), ("a" * 65, "FIELD_TOO_LONG"), ("a b", "FIELD_INVALID"), ("a:b", "FIELD_INVALID"),
     ("../etc", "FIELD_INVALID"), ("é", "FIELD_INVALID"), ("a\n", "FIELD_INVALID")],
)  # fmt: skip
def test_bad_tenants(bad: str, reason: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_tenant_id(bad)
    assert caught.value.reason == reason


def test_user_ids_may_be_emails_keys_may_not() -> None:
    assert check_user_id("ana@acme.example") == "ana@acme.example"
    with pytest.raises(InvalidRequest):
        check_key("ana@acme.example", "operation_code")


def test_batch_dedupes_in_order_and_is_bounded() -> None:
    assert check_batch(["b", "a", "b"], "codes") == ["b", "a"]
    with pytest.raises(InvalidRequest, match="at most"):
        check_batch(["a"] * (MAX_BATCH + 1), "codes")
    with pytest.raises(InvalidRequest, match="at least one"):
        check_batch([], "codes")


@given(st.text(max_size=300))
def test_anything_accepted_is_safe_in_a_url_and_a_channel(value: str) -> None:
    try:
        tenant = check_tenant_id(value)
    except InvalidRequest:
        return
    assert ":" not in tenant
    assert "/" not in tenant
    assert 1 <= len(tenant) <= 64
