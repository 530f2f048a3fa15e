"""Alert rules and dashboard (deploy/prometheus/, deploy/grafana/) hold against the real service.

* promtool checks the rules and runs their unit tests (synthetic series for every alert);
  the unit tests do catch a broken rule.
* Every query of the rules and of the dashboard names only metrics listed in
  deploy/prometheus/metrics.yml, and only labels those metrics have.
* That list is the truth: a real server's /metrics declares every `exported` family with
  exactly the listed labels, no family the list lacks, and none of the `assumed` ones (names
  other work is adding: when one appears, move it to `exported`).

promtool comes from scripts/promtool: on PATH, else installed from Debian's `prometheus`
package when running as root (CI here). Without it the promtool tests fail in CI and skip,
saying how to get it, elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from hybridcache.server.app import Service
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.stack.redis_process import RedisProcess, free_port
from tests.conftest import service_settings
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(300)  # a first run may install promtool with apt-get

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "hybridcache-alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "hybridcache-alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "hybridcache.json"
TARGET_LABELS = {"instance", "job", "pod"}  # attached by Prometheus to every scraped series
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# --- promtool


@pytest.fixture(scope="module")
def promtool() -> str:
    wrapper = str(ROOT / "scripts" / "promtool")
    probe = subprocess.run([wrapper, "--version"], capture_output=True, text=True, timeout=280, check=False)
    if probe.returncode != 0:
        message = f"promtool unavailable (scripts/promtool exit {probe.returncode}):\n{probe.stderr}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return wrapper


def run_promtool(promtool: str, *args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


def test_promtool_checks_the_rules_and_the_example_config(promtool: str) -> None:
    rules = run_promtool(promtool, "check", "rules", RULES.name)
    assert rules.returncode == 0, f"promtool check rules failed:\n{rules.stdout}{rules.stderr}"
    config = run_promtool(promtool, "check", "config", "prometheus.yml")
    assert config.returncode == 0, f"promtool check config failed:\n{config.stdout}{config.stderr}"


def test_promtool_unit_tests_of_the_alerts_pass(promtool: str) -> None:
    result = run_promtool(promtool, "test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, f"promtool test rules failed:\n{result.stdout}{result.stderr}"


def test_every_alert_has_a_unit_test_and_a_runbook_section() -> None:
    alerts = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test.get("alert_rule_test", [])}  # fmt: skip
    operations = (ROOT / "docs" / "OPERATIONS.md").read_text()
    for rule in alerts:
        name = rule["alert"]
        assert name in tested, f"alert {name} has no case in {RULE_TESTS.name}"
        assert rule["labels"]["severity"] in {"critical", "warning"}, f"{name}: severity critical or warning"
        anchor = rule["annotations"]["runbook"].partition("#")[2]
        assert anchor == name.lower(), f"{name}: runbook anchor must be #{name.lower()}"
        assert f"### {name}" in operations, f"{name}: docs/OPERATIONS.md needs a '### {name}' section"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (
            "for: 5m\n        labels:\n          severity: critical",
            "for: 1m\n        labels:\n          severity: critical",
        ),
        ("> 0.1)\n          and on (instance)", "> 0.6)\n          and on (instance)"),
        ('{reason!~"duplicate|old-version"}', ""),
    ],
    ids=["freshness-for-too-short", "wrapper-error-threshold-too-high", "rejections-count-duplicates"],
)
def test_the_unit_tests_catch_a_broken_rule(promtool: str, tmp_path: Path, old: str, new: str) -> None:
    rules = RULES.read_text()
    assert old in rules, f"the mutation no longer applies: {old!r} not in {RULES.name}"
    (tmp_path / RULES.name).write_text(rules.replace(old, new, 1))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    result = run_promtool(promtool, "test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0, f"promtool test rules passed a broken rule ({old!r} -> {new!r})"


# --- queries: which metrics and labels they use


def listed() -> dict[str, dict[str, Any]]:
    registry = yaml.safe_load((PROMETHEUS_DIR / "metrics.yml").read_text())
    return {name: entry for section in registry.values() for name, entry in section.items()}


def family_of(series_name: str, families: dict[str, dict[str, Any]]) -> tuple[str, set[str]] | None:
    """The listed family a series name belongs to, and the labels series of it have."""
    if series_name in families:
        return series_name, set(families[series_name]["labels"])
    for suffix in HISTOGRAM_SUFFIXES:
        base = series_name.removesuffix(suffix)
        if base != series_name and families.get(base, {}).get("type") == "histogram":
            return base, set(families[base]["labels"]) | ({"le"} if suffix == "_bucket" else set())
    return None


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables replaced by what they become at query time."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert rule and every dashboard panel."""
    found = [
        (f"alert {rule['alert']}", str(rule["expr"]))
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    ]
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r}", grafana_to_promql(target["expr"])))
    return found


def label_problems(expr: str, families: dict[str, dict[str, Any]]) -> list[str]:
    """Unlisted metrics, labels a selector matches that its metric lacks, and `by (...)`
    labels that no metric under the aggregation has."""
    problems: list[str] = []

    def selectors_in(node: Any) -> list[Any]:
        found: list[Any] = []

        def visit(n: Any) -> None:
            if isinstance(n, promql_parser.VectorSelector):
                found.append(n)

        promql_parser.walk(node, visit)
        return found

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            family = family_of(node.name or "", families)
            if family is None:
                problems.append(f"{node.name} is not in deploy/prometheus/metrics.yml")
                return
            labels = family[1] | TARGET_LABELS | {"__name__"}
            problems.extend(
                f"{node.name} has no label {m.name!r}" for m in node.matchers.matchers if m.name not in labels
            )
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            if node.modifier.type != promql_parser.AggModifierType.By:
                return
            available = set(TARGET_LABELS)
            for selector in selectors_in(node.expr):
                family = family_of(selector.name, families)
                available |= family[1] if family else set()
            problems.extend(
                f"by ({label}): no metric under it has that label"
                for label in node.modifier.labels
                if label not in available
            )

    promql_parser.walk(promql_parser.parse(expr), visit)
    return problems


def test_every_query_uses_only_listed_metrics_and_their_labels() -> None:
    families = listed()
    problems = [
        f"{where}: {problem}" for where, expr in queries() for problem in label_problems(expr, families)
    ]
    assert not problems, "\n".join(problems)


def test_the_query_check_catches_an_unknown_metric_and_label() -> None:
    families = listed()
    assert label_problems("rate(hybridcache_cache_hits_total[5m])", families) == [
        "hybridcache_cache_hits_total is not in deploy/prometheus/metrics.yml"
    ]
    assert label_problems('hybridcache_cache_entries{tenant="acme"}', families) == [
        "hybridcache_cache_entries has no label 'tenant'"
    ]
    assert label_problems("sum by (tenant) (hybridcache_cache_entries)", families) == [
        "by (tenant): no metric under it has that label"
    ]


def test_dashboard_is_generated_and_laid_out() -> None:
    generated = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "deploy" / "grafana" / "generate.py"), "--check"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, f"panel {panel['title']!r} runs off the grid"
        mine = {
            (x, y) for x in range(box["x"], box["x"] + box["w"]) for y in range(box["y"], box["y"] + box["h"])
        }
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        if panel["type"] != "row":
            assert panel["targets"], f"panel {panel['title']!r} has no query"
            assert panel["description"], f"panel {panel['title']!r} says nothing about what it shows"
    for variable in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]["query"]) if variable[
            "type"] == "query" else None  # fmt: skip
        if variable["type"] == "query":
            assert match, f"variable {variable['name']}: unexpected query {variable['query']!r}"
            family = family_of(match[1], listed())
            assert family is not None, f"variable {variable['name']}: {match[1]} is not listed"
            assert match[2] in family[1] | TARGET_LABELS, (
                f"variable {variable['name']}: {match[1]} lacks {match[2]}"
            )


# --- the list against a real running server


@pytest.fixture
def scraped(
    start_service: Callable[..., Service], dev_wrapper: Any, redis_server: RedisProcess
) -> dict[str, set[str]]:
    """{family name as stored (counters with _total): labels of its samples} of a real server
    that has served reads of every kind, refused a call by its rate limit and rejected an event."""
    port = free_port()
    service = start_service(
        service_settings(
            dev_wrapper.url, redis_server.url, metrics_port=port, caller_rate_per_s=1.0, caller_burst=8
        )
    )
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = pb_grpc.HybridCacheStub(channel)
        stub.GetCreditCost(
            pb.GetCreditCostRequest(tenant_id="acme", operation_code="crm.leads.read"), timeout=5
        )
        stub.GetUserProfile(pb.GetUserProfileRequest(tenant_id="acme", user_id="user-3"), timeout=5)
        codes = []
        for _ in range(20):
            try:
                stub.GetCacheStats(pb.GetCacheStatsRequest(), timeout=5)
            except grpc.RpcError as error:
                codes.append(error.code())
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, f"the rate limit refused nothing: {codes}"
    with redis_server.client() as client:
        client.publish("crm:acme:credit-config-changed", b"{not json")

    def families() -> dict[str, set[str]]:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        found: dict[str, set[str]] = {}
        for family in text_string_to_metric_families(text):
            name = family.name + ("_total" if family.type == "counter" else "")
            found[name] = {label for s in family.samples for label in s.labels if label != "le"}
        return found

    def with_the_rejection() -> dict[str, set[str]] | None:
        found = families()
        return found if found.get("hybridcache_events_rejected_total") else None

    scraped = wait_for(with_the_rejection, timeout=10, what="the rejected event on /metrics")
    assert scraped is not None  # wait_for returns a truthy value or fails
    return scraped


def test_listed_metrics_are_what_a_running_server_exports(scraped: dict[str, set[str]]) -> None:
    registry = yaml.safe_load((PROMETHEUS_DIR / "metrics.yml").read_text())
    problems = []
    for name, entry in registry["exported"].items():
        if name not in scraped:
            problems.append(f"{name} is listed as exported but a running server does not declare it")
        elif scraped[name] != set(entry["labels"]):
            problems.append(
                f"{name}: listed labels {sorted(entry['labels'])}, /metrics has {sorted(scraped[name])}"
            )
    for name in sorted(scraped.keys() - registry["exported"].keys()):
        base = name.removesuffix("_created")
        if base != name and ({base, base + "_total"} & registry["exported"].keys()):
            continue  # prometheus_client's own creation time of a listed counter or histogram
        problems.append(
            f"{name} (labels {sorted(scraped[name])}) is on /metrics but not in "
            "deploy/prometheus/metrics.yml: list it under `exported` (and in docs/OPERATIONS.md "
            "if a panel or alert uses it)"
        )
    for name in registry["assumed"]:
        if name in scraped:
            problems.append(
                f"{name} is now exported (labels {sorted(scraped[name])}): move it from `assumed` to "
                "`exported` in deploy/prometheus/metrics.yml with those labels"
            )
    assert not problems, "\n".join(problems)
