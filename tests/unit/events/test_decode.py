"""The decoder: the seed's exact message, every event type, and each rejection reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.values import CreditCost, FeatureFlag, RolePermissions, UserStatus
from hybridcache.server.events.decode import (
    NO_OLD_VALUE,
    Action,
    DecoderConfig,
    Event,
    Rejection,
    decode,
)
from hybridcache.server.events.signing import sign
from hybridcache.server.events.stats import REJECTION_REASONS

NOW_MS = 1_700_000_000_000
CONFIG = DecoderConfig()

# The seed's example, byte for byte as JSON.stringify produces it (seed/hybrid-approach.md §1:
# `newValue: 3.0` becomes `3` in JavaScript; the Python publisher and hand-written JSON keep
# `3.0`, so both spellings are tested).
SEED_CHANNEL = "crm:123:credit-config-changed"
SEED_BODY = (
    '{"eventId":"change-123","eventType":"credit-config-changed","tenantId":"123",'
    '"data":{"configId":"cfg-789","operationCode":"crm.leads.create",'
    '"changedFields":["credit_cost"],"newValue":3.0,"oldValue":2.5}}'
)


def _decode(channel: str, body: Any, config: DecoderConfig = CONFIG) -> Event | Rejection:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return decode(channel, data, config=config, now_ms=NOW_MS)


def _accepted(channel: str, body: Any, config: DecoderConfig = CONFIG) -> Event:
    result = _decode(channel, body, config)
    assert isinstance(result, Event), f"rejected: {result}"
    return result


def _body(event_type: str, data: dict[str, Any], tenant: str = "acme", **top: Any) -> dict[str, Any]:
    return {"eventId": "e-1", "eventType": event_type, "tenantId": tenant, "data": data, **top}


def test_the_seed_example_is_accepted_exactly() -> None:
    event = _accepted(SEED_CHANNEL, SEED_BODY)
    assert event.app == "crm"
    assert event.tenant_id == "123"
    assert event.event_id == "change-123"
    assert event.event_type == "credit-config-changed"
    assert event.kind is Kind.CREDIT_COSTS
    assert event.key == "crm.leads.create"
    assert event.changed_fields == ("credit_cost",)
    assert event.action is Action.APPLY
    assert event.value == CreditCost("crm.leads.create", "3", 0)
    assert event.old_value == CreditCost("crm.leads.create", "2.5", 0)
    assert event.version is None
    assert not event.deleted
    assert event.published_at_ms is None
    assert event.event_time_ms == NOW_MS  # no publishedAt: the receive time


def test_the_seed_example_as_javascript_serializes_it() -> None:
    js = SEED_BODY.replace('"newValue":3.0', '"newValue":3')
    assert _accepted(SEED_CHANNEL, js).value == CreditCost("crm.leads.create", "3", 0)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("3.0", "3"),
        ("0.1", "0.1"),
        ("2.50", "2.5"),
        ("0.30000000000000004", "0.30000000000000004"),  # a binary float would print 0.3...
        ("1e2", "100"),
        ("1.5E-3", "0.0015"),
        ("0", "0"),
        ("12345678901234567890.123456789", "12345678901234567890.123456789"),
        ('"7.25"', "7.25"),  # a decimal string is accepted as well
    ],
)
def test_costs_stay_exact(raw: str, canonical: str) -> None:
    body = SEED_BODY.replace('"newValue":3.0', f'"newValue":{raw}')
    event = _accepted(SEED_CHANNEL, body)
    assert isinstance(event.value, CreditCost)
    assert event.value.cost == canonical


def test_version_and_published_at_are_carried() -> None:
    body = _body(
        "credit-config-changed",
        {"operationCode": "op.a", "changedFields": ["cost"], "newValue": "1.5", "version": 7},
        publishedAt=NOW_MS - 250,
    )
    event = _accepted("crm:acme:credit-config-changed", body)
    assert event.version == 7
    assert event.value == CreditCost("op.a", "1.5", 7)
    assert event.old_value is NO_OLD_VALUE
    assert event.event_time_ms == NOW_MS - 250


def test_credit_deletion() -> None:
    data = {
        "operationCode": "op.a",
        "changedFields": ["cost"],
        "newValue": None,
        "deleted": True,
        "version": 4,
    }
    event = _accepted("crm:acme:credit-config-changed", _body("credit-config-changed", data))
    assert event.action is Action.APPLY
    assert event.value is None
    assert event.deleted
    assert event.version == 4


def test_old_value_null_means_did_not_exist() -> None:
    data = {"operationCode": "op.new", "changedFields": ["cost"], "newValue": 1, "oldValue": None}
    event = _accepted("crm:acme:credit-config-changed", _body("credit-config-changed", data))
    assert event.old_value is None


@pytest.mark.parametrize(
    ("event_type", "data", "kind", "key", "value"),
    [
        (
            "role-permissions-changed",
            {
                "roleId": "sales-rep",
                "changedFields": ["permissions"],
                "newValue": ["crm.leads.*"],
                "version": 2,
            },
            Kind.ROLE_PERMISSIONS,
            "sales-rep",
            RolePermissions("sales-rep", frozenset({"crm.leads.*"}), 2),
        ),
        (
            "user-status-changed",
            {
                "userId": "user-1",
                "changedFields": ["active"],
                "newValue": {"active": False, "roles": ["sales-rep"]},
                "version": 3,
            },
            Kind.USER_STATUS,
            "user-1",
            UserStatus("user-1", False, ("sales-rep",), 3),
        ),
        (
            "feature-flag-changed",
            {
                "flagKey": "crm.ai-summaries",
                "changedFields": ["enabled"],
                "newValue": {"enabled": True, "value": "v2"},
            },
            Kind.FEATURE_FLAGS,
            "crm.ai-summaries",
            FeatureFlag("crm.ai-summaries", True, "v2", 0),
        ),
        (
            "feature-flag-changed",
            {"flagKey": "crm.beta", "changedFields": ["enabled"], "newValue": {"enabled": False}},
            Kind.FEATURE_FLAGS,
            "crm.beta",
            FeatureFlag("crm.beta", False, "", 0),
        ),
    ],
)
def test_value_carrying_types(
    event_type: str, data: dict[str, Any], kind: Kind, key: str, value: Any
) -> None:
    event = _accepted(f"crm:acme:{event_type}", _body(event_type, data))
    assert (event.kind, event.key, event.action, event.value) == (kind, key, Action.APPLY, value)


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("role-permissions-changed", {"roleId": "admin", "changedFields": ["permissions"]}),
        ("user-status-changed", {"userId": "u-9", "changedFields": ["roles"], "version": 5}),
        ("feature-flag-changed", {"flagKey": "f.x", "changedFields": ["enabled"]}),
        ("feature-flag-changed", {"flagKey": "f.x", "changedFields": ["enabled"], "newValue": None}),
        ("credit-config-changed", {"operationCode": "op.b", "changedFields": ["cost"]}),
    ],
)
def test_without_a_new_value_the_key_is_refetched(event_type: str, data: dict[str, Any]) -> None:
    event = _accepted(f"crm:acme:{event_type}", _body(event_type, data))
    assert event.action is Action.REFETCH
    assert event.value is None


@pytest.mark.parametrize(
    ("event_type", "key_field", "kind"),
    [
        ("user-profile-changed", "userId", Kind.USER_PROFILES),
        ("org-unit-changed", "orgUnitId", Kind.ORG_UNITS),
    ],
)
def test_invalidate_only_types(event_type: str, key_field: str, kind: Kind) -> None:
    # The seed's user-profile-changed shape: only the id and the changed field names.
    data = {key_field: "user-123", "changedFields": ["title", "department"]}
    event = _accepted(f"crm:acme:{event_type}", _body(event_type, data))
    assert event.action is Action.INVALIDATE
    assert (event.kind, event.key, event.changed_fields) == (kind, "user-123", ("title", "department"))
    assert event.value is None


def test_channel_may_be_bytes_and_other_configured_apps() -> None:
    config = DecoderConfig(apps=frozenset({"crm", "hrms"}))
    body = _body("org-unit-changed", {"orgUnitId": "ou-1", "changedFields": []})
    event = decode(b"hrms:acme:org-unit-changed", json.dumps(body).encode(), config=config, now_ms=NOW_MS)
    assert isinstance(event, Event)
    assert event.app == "hrms"


VALID_CREDIT = {"operationCode": "op.a", "changedFields": ["cost"], "newValue": 1}


def _credit(data: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    return _body("credit-config-changed", VALID_CREDIT if data is None else data, **top)


def _with(**changes: Any) -> dict[str, Any]:
    return {**VALID_CREDIT, **changes}


CREDIT_CHANNEL = "crm:acme:credit-config-changed"

REJECTIONS: list[tuple[str, str, Any, str]] = [
    # (case id, channel, body, reason)
    ("oversized", CREDIT_CHANNEL, '{"pad":"' + "x" * 70_000 + '"}', "oversized"),
    ("not json", CREDIT_CHANNEL, "{not json", "malformed-json"),
    ("empty", CREDIT_CHANNEL, "", "malformed-json"),
    ("invalid utf-8", CREDIT_CHANNEL, b'{"eventId":"\xff\xfe"}', "malformed-json"),
    ("NaN", SEED_CHANNEL, SEED_BODY.replace("3.0", "NaN"), "malformed-json"),
    ("deep nesting", CREDIT_CHANNEL, "[" * 30_000 + "]" * 30_000, "malformed-json"),
    ("two parts", "crm:credit-config-changed", _credit(), "bad-channel"),
    ("four parts", "crm:acme:x:credit-config-changed", _credit(), "bad-channel"),
    ("unknown app", "hrms:acme:credit-config-changed", _credit(), "bad-channel"),
    ("tenant charset", "crm:ac me:credit-config-changed", _credit(), "bad-channel"),
    ("tenant too long", f"crm:{'t' * 65}:credit-config-changed", _credit(), "bad-channel"),
    ("empty tenant", "crm::credit-config-changed", _credit(), "bad-channel"),
    ("unknown type", "crm:acme:lead-created", _credit(), "unknown-event-type"),
    ("not an object", CREDIT_CHANNEL, "[1, 2]", "schema"),
    ("no eventId", CREDIT_CHANNEL, {**_credit(), "eventId": None}, "schema"),
    ("eventId too long", CREDIT_CHANNEL, {**_credit(), "eventId": "e" * 129}, "schema"),
    ("eventId control chars", CREDIT_CHANNEL, {**_credit(), "eventId": "e\n1"}, "schema"),
    ("numeric tenantId", CREDIT_CHANNEL, {**_credit(), "tenantId": 123}, "schema"),
    ("data not object", CREDIT_CHANNEL, {**_credit(), "data": [1]}, "schema"),
    ("publishedAt string", CREDIT_CHANNEL, _credit(publishedAt="now"), "schema"),
    ("no key", CREDIT_CHANNEL, _credit({"changedFields": [], "newValue": 1}), "schema"),
    ("key charset", CREDIT_CHANNEL, _credit(_with(operationCode="op a")), "schema"),
    ("key too long", CREDIT_CHANNEL, _credit(_with(operationCode="o" * 129)), "schema"),
    ("no changedFields", CREDIT_CHANNEL, _credit({"operationCode": "op.a", "newValue": 1}), "schema"),
    ("changedFields not strings", CREDIT_CHANNEL, _credit(_with(changedFields=[1])), "schema"),
    ("version negative", CREDIT_CHANNEL, _credit(_with(version=-1)), "schema"),
    ("version bool", CREDIT_CHANNEL, _credit(_with(version=True)), "schema"),
    ("version float", CREDIT_CHANNEL, _credit(_with(version=1.5)), "schema"),
    ("cost bool", CREDIT_CHANNEL, _credit(_with(newValue=True)), "schema"),
    ("cost object", CREDIT_CHANNEL, _credit(_with(newValue={"cost": 1})), "schema"),
    ("cost negative", CREDIT_CHANNEL, _credit(_with(newValue=-1)), "schema"),
    ("cost not a number", CREDIT_CHANNEL, _credit(_with(newValue="abc")), "schema"),
    ("cost Infinity string", CREDIT_CHANNEL, _credit(_with(newValue="Infinity")), "schema"),
    ("cost huge exponent", SEED_CHANNEL, SEED_BODY.replace("3.0", "1e999999"), "schema"),
    ("cost tiny exponent", SEED_CHANNEL, SEED_BODY.replace("3.0", "1e-999999"), "schema"),
    ("old cost bad", CREDIT_CHANNEL, _credit(_with(oldValue="x")), "schema"),
    ("deleted with value", CREDIT_CHANNEL, _credit(_with(deleted=True)), "schema"),
    ("deleted not bool", CREDIT_CHANNEL, _credit(_with(deleted="yes")), "schema"),
    (
        "role permissions not list",
        "crm:acme:role-permissions-changed",
        _body("role-permissions-changed", {"roleId": "r", "changedFields": [], "newValue": "all"}),
        "schema",
    ),
    (
        "status active missing",
        "crm:acme:user-status-changed",
        _body("user-status-changed", {"userId": "u", "changedFields": [], "newValue": {"roles": []}}),
        "schema",
    ),
    (
        "status role id charset",
        "crm:acme:user-status-changed",
        _body(
            "user-status-changed",
            {"userId": "u", "changedFields": [], "newValue": {"active": True, "roles": ["a b"]}},
        ),
        "schema",
    ),
    (
        "flag enabled not bool",
        "crm:acme:feature-flag-changed",
        _body("feature-flag-changed", {"flagKey": "f", "changedFields": [], "newValue": {"enabled": "yes"}}),
        "schema",
    ),
    (
        "flag value not string",
        "crm:acme:feature-flag-changed",
        _body(
            "feature-flag-changed",
            {"flagKey": "f", "changedFields": [], "newValue": {"enabled": True, "value": 1}},
        ),
        "schema",
    ),
    (
        "tenant mismatch",
        CREDIT_CHANNEL,
        _body("credit-config-changed", VALID_CREDIT, tenant="other"),
        "tenant-mismatch",
    ),
    ("type mismatch", CREDIT_CHANNEL, _body("role-permissions-changed", VALID_CREDIT), "type-mismatch"),
]


@pytest.mark.parametrize(
    ("channel", "body", "reason"), [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS]
)
def test_rejections(channel: str, body: Any, reason: str) -> None:
    result = _decode(channel, body)
    assert result == Rejection(reason, result.detail if isinstance(result, Rejection) else ""), result
    assert reason in REJECTION_REASONS


def test_the_size_cap_is_configurable_and_checked_before_parsing() -> None:
    small = DecoderConfig(max_bytes=100)
    assert _decode(CREDIT_CHANNEL, "x" * 101, small) == Rejection("oversized")  # not malformed-json
    assert isinstance(_decode(CREDIT_CHANNEL, "x" * 100, small), Rejection)
    assert _decode(CREDIT_CHANNEL, "x" * 100, small).reason == "malformed-json"  # type: ignore[union-attr]


def test_tenant_allow_list() -> None:
    config = DecoderConfig(allowed_tenants=frozenset({"acme"}))
    assert isinstance(_decode(CREDIT_CHANNEL, _credit(), config), Event)
    other = _body("credit-config-changed", VALID_CREDIT, tenant="globex")
    assert _decode("crm:globex:credit-config-changed", other, config) == Rejection("tenant-not-allowed")


def test_rejection_details_never_quote_values() -> None:
    result = _decode(CREDIT_CHANNEL, _credit(_with(newValue="secret-looking-value")))
    assert isinstance(result, Rejection)
    assert result.reason == "schema"
    assert "secret-looking-value" not in result.detail


def test_app_names_are_validated() -> None:
    with pytest.raises(ValueError, match="app names"):
        DecoderConfig(apps=frozenset({"crm:*"}))


# --- signed events

KEY = b"k1-secret"
SIGNED = DecoderConfig(hmac_keys=(KEY,))


def _signed(body: dict[str, Any], key: bytes = KEY, at_ms: int = NOW_MS) -> str:
    return sign(json.dumps(body, separators=(",", ":")), key, at_ms)


def test_a_signed_event_is_accepted() -> None:
    event = _accepted(CREDIT_CHANNEL, _signed(_credit()), SIGNED)
    assert event.value == CreditCost("op.a", "1", 0)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unsigned", json.dumps(_credit())),
        ("tampered", _signed(_credit()).replace('"newValue":1', '"newValue":0')),
        ("expired", _signed(_credit(), at_ms=NOW_MS - 301_000)),
        ("from the future", _signed(_credit(), at_ms=NOW_MS + 301_000)),
        ("unknown key", _signed(_credit(), key=b"someone-else")),
        ("garbled signature", _signed(_credit())[:-5] + 'zz"}'),
        (
            "signature not last",
            _signed(_credit()).replace('{"eventId"', '{"x":1,"eventId"', 1)[:-1] + ',"y":1}',
        ),
    ],
)
def test_bad_signatures_are_rejected(case: str, message: str) -> None:
    assert _decode(CREDIT_CHANNEL, message, SIGNED).reason == "bad-signature", case  # type: ignore[union-attr]


def test_key_rotation_accepts_old_and_new_keys() -> None:
    rotating = DecoderConfig(hmac_keys=(b"new-key", KEY))
    assert isinstance(_decode(CREDIT_CHANNEL, _signed(_credit(), key=KEY), rotating), Event)
    assert isinstance(_decode(CREDIT_CHANNEL, _signed(_credit(), key=b"new-key"), rotating), Event)


def test_signature_member_is_tolerated_when_signing_is_off() -> None:
    assert isinstance(_decode(CREDIT_CHANNEL, _signed(_credit())), Event)


# --- robustness: the decoder never raises, whatever arrives

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.decimals(allow_nan=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    channel=st.binary(max_size=80) | st.sampled_from([CREDIT_CHANNEL, "crm:acme:user-status-changed"]),
    data=st.binary(max_size=300),
)
def test_arbitrary_bytes_never_raise(channel: bytes | str, data: bytes) -> None:
    assert isinstance(decode(channel, data, config=CONFIG, now_ms=NOW_MS), Event | Rejection)


@settings(max_examples=300, deadline=None)
@given(data=json_values, new_value=json_values, old_value=json_values)
def test_arbitrary_json_never_raises(data: Any, new_value: Any, old_value: Any) -> None:
    for event_type in (
        "credit-config-changed",
        "user-status-changed",
        "feature-flag-changed",
        "role-permissions-changed",
    ):
        bodies = [
            _body(
                event_type,
                {"operationCode": "a", "changedFields": [], "newValue": new_value, "oldValue": old_value},
            ),
            _body(event_type, data if isinstance(data, dict) else {"x": data}),
        ]
        for body in bodies:
            raw = json.dumps(body, default=str)
            result = decode(f"crm:acme:{event_type}", raw, config=CONFIG, now_ms=NOW_MS)
            assert isinstance(result, Event | Rejection)
