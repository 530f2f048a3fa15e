"""Configuration: typed, validated, one line naming the variable on error, and documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hybridcache.server.app import policies_from
from hybridcache.server.config import NOT_SETTINGS, ConfigError, load_settings, unknown_variables
from hybridcache.server.core.kinds import Kind, Tier, WhenWrapperDown
from hybridcache.server.ops.cli.target import TARGET_ENV, TOKEN_ENV

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(30)


def test_defaults_follow_the_seed_split() -> None:
    policies = policies_from(load_settings({}))
    replicated = {k for k, p in policies.items() if p.tier is Tier.REPLICA}
    assert replicated == {Kind.CREDIT_COSTS, Kind.ROLE_PERMISSIONS, Kind.USER_STATUS, Kind.FEATURE_FLAGS}
    assert policies[Kind.USER_PROFILES].ttl_s == 300.0


def test_kind_policy_overrides() -> None:
    settings = load_settings(
        {"HYBRIDCACHE_KIND_POLICIES": '{"user-profiles": {"ttl_s": 60, "when_down": "fail"}}'}
    )
    policy = policies_from(settings)[Kind.USER_PROFILES]
    assert (policy.ttl_s, policy.when_down) == (60.0, WhenWrapperDown.FAIL)


def test_lists_are_comma_separated() -> None:
    settings = load_settings({"HYBRIDCACHE_TENANTS": "acme, globex", "HYBRIDCACHE_EVENT_APPS": "crm,hrms"})
    assert settings.tenants == ["acme", "globex"]
    assert settings.event_apps == ["crm", "hrms"]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("HYBRIDCACHE_PORT", "http", "HYBRIDCACHE_PORT: "),
        ("HYBRIDCACHE_PORT", "70000", "HYBRIDCACHE_PORT: "),
        ("HYBRIDCACHE_TENANTS", "acme,bad tenant", "HYBRIDCACHE_TENANTS: 'bad tenant'"),
        (
            "HYBRIDCACHE_KIND_POLICIES",
            '{"user-profiles": {"ttl": 1}}',
            "HYBRIDCACHE_KIND_POLICIES: user-profiles: unknown key 'ttl' (did you mean 'ttl_s'?)",
        ),
        ("HYBRIDCACHE_KIND_POLICIES", '{"no-such-kind": {}}', "HYBRIDCACHE_KIND_POLICIES"),
        ("HYBRIDCACHE_KIND_POLICIES", "{not json", "HYBRIDCACHE_KIND_POLICIES"),
        ("HYBRIDCACHE_EVENT_MODE", "kafka", "HYBRIDCACHE_EVENT_MODE: "),
        ("HYBRIDCACHE_WRAPPER_TIMEOUT_S", "0", "HYBRIDCACHE_WRAPPER_TIMEOUT_S: "),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({variable: value})
    assert str(caught.value).startswith(expected), str(caught.value)
    assert "\n" not in str(caught.value)


def test_serve_stops_at_start_with_one_line_on_a_bad_value() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hybridcache.server.cli", "serve"],
        env={"HYBRIDCACHE_PORT": "not-a-port", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "HYBRIDCACHE_PORT" in lines[0]


def test_readme_table_lists_every_variable() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from config_table import config_table
    finally:
        sys.path.pop(0)
    readme = (ROOT / "README.md").read_text()
    assert config_table() in readme, "README's configuration table is stale: run scripts/config_table.py"


def test_policy_overrides_are_typed_and_checked() -> None:
    settings = load_settings(
        {"HYBRIDCACHE_KIND_POLICIES": '{"credit-costs": {"tier": "on-demand", "ttl_s": 5}}'}
    )
    assert policies_from(settings)[Kind.CREDIT_COSTS].tier is Tier.ON_DEMAND
    with pytest.raises(ConfigError, match="HYBRIDCACHE_KIND_POLICIES: user-profiles cannot be replicated"):
        load_settings({"HYBRIDCACHE_KIND_POLICIES": '{"user-profiles": {"tier": "replica"}}'})


def test_unknown_variables_are_named_with_the_closest_setting() -> None:
    env = {"HYBRIDCACHE_PORTT": "1", "HYBRIDCACHE_PORT": "1", "HOME": "/", TOKEN_ENV: "t", TARGET_ENV: "x"}
    assert unknown_variables(env) == [
        "HYBRIDCACHE_PORTT is not a setting and is ignored (did you mean HYBRIDCACHE_PORT?)"
    ]
    assert {TOKEN_ENV, TARGET_ENV} <= NOT_SETTINGS, "the operator commands' variables are not warned of"
