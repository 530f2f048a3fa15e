"""`hybridcache serve` with a bad setting stops at start: exit 2, ONE line naming the variable
and the problem, no traceback; settings that are valid but probably a mistake are warned of.

Each family of settings is tried through the real entry point (a subprocess), as an operator
would meet it. The Wrapper and Redis URLs point at a closed port, so a server that wrongly
starts reaches nothing of anyone's and is stopped by the timeout.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hybridcache.server.api.auth import token_sha256
from tests.devstack_process import WatchedProcess

pytestmark = pytest.mark.timeout(120)

NOWHERE = {
    "PATH": "/usr/bin:/bin",
    "HYBRIDCACHE_HOST": "127.0.0.1",
    "HYBRIDCACHE_PORT": "0",
    "HYBRIDCACHE_WRAPPER_URL": "http://127.0.0.1:9",
    "HYBRIDCACHE_REDIS_URL": "redis://127.0.0.1:9/0",
    "HYBRIDCACHE_INSECURE_DEV_MODE": "true",
    "HYBRIDCACHE_LOG_FORMAT": "json",
}
SERVE = [sys.executable, "-m", "hybridcache.server.cli", "serve"]
CALLER: dict[str, Any] = {"name": "crm", "token_sha256": token_sha256("crm-token"), "tenants": ["acme"]}


def refused(**env: str) -> str:
    """`hybridcache serve` must refuse `env`: its one line of stderr."""
    try:
        result = subprocess.run(
            SERVE, env={**NOWHERE, **env}, capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"hybridcache serve started with {env} instead of refusing it") from None
    assert result.returncode == 2, f"exit {result.returncode}, expected 2; stderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    assert lines[0].startswith("hybridcache: configuration error: HYBRIDCACHE_"), lines[0]
    return lines[0].removeprefix("hybridcache: configuration error: ")


@pytest.mark.parametrize(
    ("callers", "expected"),
    [
        ([{"token_sha256": CALLER["token_sha256"], "tenants": ["*"]}], "entry 0: 'name' is required"),
        ([{**CALLER, "burst": "lots"}], "entry 0: burst: Input should be a valid integer"),
        ([{**CALLER, "burst": 0}], "entry 0: burst: Input should be greater than or equal to 1"),
        ([{**CALLER, "rate_per_s": "5"}], "entry 0: rate_per_s: Input should be a valid number"),
        ([{**CALLER, "token_sha256": "abc"}], "entry 0: token_sha256: String should match pattern"),
        ([{**CALLER, "tenant": ["acme"]}], "entry 0: unknown key 'tenant' (did you mean 'tenants'?)"),
        ([{**CALLER, "tenants": ["bad tenant"]}], "entry 0: tenants: 'bad tenant'"),
        ([CALLER, {**CALLER, "name": "other"}], "entry 1: token_sha256 repeats an earlier entry's"),
        ("[{", "invalid JSON"),
    ],
)
def test_callers(callers: object, expected: str) -> None:
    value = callers if isinstance(callers, str) else json.dumps(callers)
    line = refused(HYBRIDCACHE_INSECURE_DEV_MODE="false", HYBRIDCACHE_CALLERS=value)
    assert line.startswith(f"HYBRIDCACHE_CALLERS: {expected}"), line
    assert CALLER["token_sha256"] not in line, "the value is not repeated (it may be a secret)"


@pytest.mark.parametrize(
    ("policies", "expected"),
    [
        (
            {"user-profiles": {"adaptive_ttl": "false"}},
            "user-profiles: adaptive_ttl: Input should be a valid boolean",
        ),
        ({"user-profiles": {"ttl_s": "60"}}, "user-profiles: ttl_s: Input should be a valid number"),
        ({"user-profiles": {"when_down": "panic"}}, "user-profiles: when_down: Input should be"),
        ({"user-profiles": {"tier": "replica"}}, "user-profiles cannot be replicated"),
        ({"no-such-kind": {}}, "no-such-kind: [key]: Input should be"),
    ],
)
def test_kind_policies(policies: object, expected: str) -> None:
    line = refused(HYBRIDCACHE_KIND_POLICIES=json.dumps(policies))
    assert line.startswith("HYBRIDCACHE_KIND_POLICIES: "), line
    assert expected in line, line


def test_tls_files(tmp_path: Path) -> None:
    pem = tmp_path / "server.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    missing = tmp_path / "missing.pem"
    assert refused(HYBRIDCACHE_TLS_CERT_FILE=str(missing), HYBRIDCACHE_TLS_KEY_FILE=str(pem)) == (
        f"HYBRIDCACHE_TLS_CERT_FILE: cannot read {missing}: No such file or directory"
    )
    assert refused(HYBRIDCACHE_TLS_CERT_FILE=str(pem), HYBRIDCACHE_TLS_KEY_FILE=str(tmp_path)) == (
        f"HYBRIDCACHE_TLS_KEY_FILE: cannot read {tmp_path}: Is a directory"
    )
    assert refused(HYBRIDCACHE_TLS_CERT_FILE=str(pem)) == (
        "HYBRIDCACHE_TLS_KEY_FILE: needed with HYBRIDCACHE_TLS_CERT_FILE"
    )
    assert refused(HYBRIDCACHE_TLS_CLIENT_CA_FILE=str(pem)).startswith(
        "HYBRIDCACHE_TLS_CLIENT_CA_FILE: client certificates need TLS"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://127.0.0.1:6379/0",
            "scheme http:// is not one of redis://, rediss://, unix://, redis+sentinel://",
        ),
        ("127.0.0.1:6379", "scheme (none) is not one of"),
        ("redis:/127.0.0.1:6379", "no host in it"),
        ("unix://", "a unix:// URL needs the socket's path"),
        ("redis+sentinel://s1/mymaster", "sentinel address 's1' must be host:port"),
    ],
)
def test_redis_url(url: str, expected: str) -> None:
    line = refused(HYBRIDCACHE_REDIS_URL=url)
    assert line.startswith(f"HYBRIDCACHE_REDIS_URL: {expected}"), line


@pytest.mark.parametrize(
    ("apps", "expected"),
    [("", "names no app"), (" , ", "names no app"), ("crm,hr:ms", "'hr:ms' is not an app name")],
)
def test_event_apps(apps: str, expected: str) -> None:
    line = refused(HYBRIDCACHE_EVENT_APPS=apps)
    assert line.startswith(f"HYBRIDCACHE_EVENT_APPS: {expected}"), line


@pytest.mark.parametrize("variable", ["HYBRIDCACHE_INSECURE_DEV_MODE", "HYBRIDCACHE_GC_FREEZE"])
def test_booleans(variable: str) -> None:
    assert (
        refused(**{variable: "maybe"})
        == f"{variable}: Input should be a valid boolean, unable to interpret input"
    )


def test_a_misspelt_variable_is_named_with_a_suggestion_even_when_start_fails() -> None:
    result = subprocess.run(
        SERVE,
        env={
            **NOWHERE,
            "HYBRIDCACHE_TLS_CERT_FIEL": "/etc/cert.pem",
            "HYBRIDCACHE_TLS_KEY_FILE": "/dev/null",
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "hybridcache: warning: HYBRIDCACHE_TLS_CERT_FIEL is not a setting and is ignored "
        "(did you mean HYBRIDCACHE_TLS_CERT_FILE?)",
        "hybridcache: configuration error: HYBRIDCACHE_TLS_CERT_FILE: needed with HYBRIDCACHE_TLS_KEY_FILE",
    ], result.stderr


def test_a_server_that_starts_warns_of_unknown_variables_and_of_secure_mode_without_callers(
    tmp_path: Path,
) -> None:
    env = {**NOWHERE, "HYBRIDCACHE_INSECURE_DEV_MODE": "false", "HYBRIDCACHE_MAX_STREAM": "5"}
    server = WatchedProcess.start(SERVE, cwd=tmp_path, env=env, ready='"listening"')
    try:
        output = server.output
    finally:
        assert server.stop(signal.SIGTERM, timeout=30) == 0
    warnings = [json.loads(line) for line in output.splitlines() if '"warning"' in line]
    said = [w["event"] for w in warnings]
    assert (
        "HYBRIDCACHE_MAX_STREAM is not a setting and is ignored (did you mean HYBRIDCACHE_MAX_STREAMS?)"
        in said
    ), said
    assert any(w.startswith("HYBRIDCACHE_CALLERS is empty: every call will be refused") for w in said), said


def test_wrapper_map(tmp_path: Path) -> None:
    mapping = tmp_path / "wrapper.yaml"
    mapping.write_text("kinds:\n  credit-costs:\n    list: {url: /api/costs, paging: {style: pages}}\n")
    assert refused(HYBRIDCACHE_WRAPPER_MAP=str(mapping)) == (
        f"HYBRIDCACHE_WRAPPER_MAP: {mapping}: credit-costs: fetch: Field required"
    )
