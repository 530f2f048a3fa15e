"""The Wrapper mapping file: both shipped examples load, and every mistake is one line naming
the file, the kind and the field (wrapper/mapping.py, HYBRIDCACHE_WRAPPER_MAP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridcache.server.config import ConfigError, load_settings
from hybridcache.server.core.errors import NotFound, WrapperUnavailable
from hybridcache.server.core.kinds import Kind
from hybridcache.server.wrapper.client import WrapperClient
from hybridcache.server.wrapper.mapping import DEFAULT_MAP, MappingError, load_map, parse_map

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
FETCH = {"fetch": {"url": "/api/credits/{key}"}}


def test_the_contract_example_is_the_built_in_default() -> None:
    assert load_map(str(EXAMPLES / "wrapper-map-contract.yaml")) == DEFAULT_MAP


def test_the_crm_example_loads() -> None:
    mapping = load_map(str(EXAMPLES / "wrapper-map-crm.yaml"))
    assert mapping.tenant.name == "X-Tenant-Id"
    path, headers = mapping.fetch_request("acme", mapping.kinds[Kind.CREDIT_COSTS], "crm.leads.create")
    assert (path, headers) == ("/api/credits/config/crm.leads.create", {"X-Tenant-Id": "acme"})


def test_ids_are_encoded_into_one_segment_and_paging_adds_the_query() -> None:
    mapping = parse_map(
        {
            "tenant": {"in": "query", "name": "tenant"},
            "kinds": {
                "credit-costs": {
                    "fetch": {"url": "/api/credits/{key}"},
                    "list": {"url": "/api/credits", "paging": {"style": "offset", "limit": 3}},
                }
            },
        },
        "m.yaml",
    )
    entry = mapping.kinds[Kind.CREDIT_COSTS]
    assert (
        mapping.fetch_request("a&b=c", entry, "x/../y?z")[0] == "/api/credits/x%2F..%2Fy%3Fz?tenant=a%26b%3Dc"
    )
    assert entry.list is not None
    assert mapping.list_request("acme", entry.list, None, 6)[0] == "/api/credits?tenant=acme&limit=3&offset=6"


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        (
            {"kinds": {"credit-costs": {**FETCH, "list": {"url": "/l", "paging": {"style": "pages"}}}}},
            "m.yaml: credit-costs: list.paging.style: Input should be 'none', 'cursor' or 'offset'",
        ),
        (
            {"kinds": {"credit-costs": {"fetch": {"url": "/api/credits"}}}},
            "m.yaml: credit-costs: fetch.url: needs {key} exactly once",
        ),
        (
            {"kinds": {"credit-costs": {"fetch": {"url": "/api/c{key}"}}}},
            "m.yaml: credit-costs: fetch.url: {tenant} and {key} must each be a whole path segment",
        ),
        (
            {"kinds": {"credit-costs": {"fetch": {"url": "/api/../{key}"}}}},
            "m.yaml: credit-costs: fetch.url: segment '..' is empty, a dot segment or not URL-safe",
        ),
        (
            {"kinds": {"credit-costs": {"fetch": {"url": "/api/{key}?x=1"}}}},
            "m.yaml: credit-costs: fetch.url: must be a path starting with '/'",
        ),
        (
            {"kinds": {"credit-costs": {**FETCH, "list": {"url": "/api/{key}"}}}},
            "m.yaml: credit-costs: list.url: may not hold {key}",
        ),
        (
            {"kinds": {"credit-costs": {**FETCH, "fields": {"price": "p"}}}},
            "m.yaml: credit-costs: fields: 'price' is no credit-costs field",
        ),
        (
            {"kinds": {"credit-costs": {**FETCH, "fields": {"cost": "a..b"}}}},
            "m.yaml: credit-costs: fields.cost: String should match pattern",
        ),
        (
            {"kinds": {"credit-costs": {"fetch": {"url": "/api/{key}", "urll": "x"}}}},
            "m.yaml: credit-costs: fetch.urll: Extra inputs are not permitted",
        ),
        ({"kinds": {"credit-cost": FETCH}}, "m.yaml: credit-cost: kind: Input should be"),
        (
            {"tenant": {"in": "header"}, "kinds": {"credit-costs": FETCH}},
            "m.yaml: tenant: name: needed with in: header",
        ),
        ({"kinds": {"credit-costs": FETCH}}, "m.yaml: credit-costs: fetch.url: needs {tenant}"),
        ({"kinds": []}, "m.yaml: kinds: Input should be a valid dictionary"),
    ],
)
def test_a_mistake_is_one_line_naming_file_kind_and_field(mapping: object, expected: str) -> None:
    with pytest.raises(MappingError) as error:
        parse_map(mapping, "m.yaml")
    assert str(error.value).startswith(expected), str(error.value)
    assert "\n" not in str(error.value)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match=r"nowhere.yaml: cannot read it: No such file"):
        load_map(str(tmp_path / "nowhere.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("kinds:\n  credit-costs: [\n", encoding="utf-8")
    with pytest.raises(MappingError, match=r"bad.yaml: not YAML \(line \d+\)"):
        load_map(str(bad))


def test_the_setting_is_checked_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "wrapper.yaml"
    bad.write_text("kinds:\n  credit-costs:\n    fetch: {url: /api/x}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_settings({"HYBRIDCACHE_WRAPPER_MAP": str(bad)})
    assert (
        str(error.value)
        == f"HYBRIDCACHE_WRAPPER_MAP: {bad}: credit-costs: fetch.url: needs {{key}} exactly once"
    )


def test_a_replicated_kind_needs_its_list_endpoint(tmp_path: Path) -> None:
    only_fetch = tmp_path / "wrapper.yaml"
    only_fetch.write_text(
        "kinds:\n  credit-costs:\n    fetch: {url: '/api/{tenant}/c/{key}'}\n", encoding="utf-8"
    )
    with pytest.raises(
        ConfigError, match=r"^HYBRIDCACHE_WRAPPER_MAP: .*wrapper.yaml: credit-costs: list: needed"
    ):
        load_settings({"HYBRIDCACHE_WRAPPER_MAP": str(only_fetch)})
    policies = (
        '{"credit-costs": {"tier": "on-demand"}, "role-permissions": {"tier": "on-demand"}, '
        '"user-status": {"tier": "on-demand"}, "feature-flags": {"tier": "on-demand"}}'
    )
    settings = load_settings(
        {"HYBRIDCACHE_WRAPPER_MAP": str(only_fetch), "HYBRIDCACHE_KIND_POLICIES": policies}
    )
    assert settings.wrapper_map == str(only_fetch)


def test_a_kind_the_mapping_leaves_out_is_a_wrapper_error_and_sends_nothing() -> None:

    mapping = parse_map({"kinds": {"org-units": {"fetch": {"url": "/api/{tenant}/units/{key}"}}}}, "m.yaml")
    client = WrapperClient(
        "http://127.0.0.1:9", "", mapping=mapping
    )  # (nothing listens: no call may be made)
    try:
        with pytest.raises(WrapperUnavailable, match="does not map credit-costs") as unmapped:
            client.fetch_item("acme", Kind.CREDIT_COSTS, "x", None)
        assert unmapped.value.reason == "WRAPPER_ERROR"
        with pytest.raises(WrapperUnavailable, match="no list endpoint for org-units"):
            client.fetch_snapshot("acme", Kind.ORG_UNITS, None)
        assert not client.known_down(Kind.CREDIT_COSTS), "a mapping gap is no Wrapper failure"
    finally:
        client.close()


def test_a_mapped_wrapper_has_no_digests_and_is_never_asked_for_them() -> None:
    mapping = load_map(str(EXAMPLES / "wrapper-map-crm.yaml"))
    client = WrapperClient(
        "http://127.0.0.1:9", "", mapping=mapping
    )  # (nothing listens: no call may be made)
    try:
        with pytest.raises(NotFound) as digest:
            client.fetch_digest("acme", Kind.CREDIT_COSTS, 256, None)
        assert digest.value.reason == "NOT_FOUND", "the verifier reads NOT_FOUND as: no digest endpoint"
        with pytest.raises(NotFound):
            client.fetch_bucket("acme", Kind.CREDIT_COSTS, 256, 0, None)
    finally:
        client.close()
