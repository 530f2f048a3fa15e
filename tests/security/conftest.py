"""A secure `hybridcache serve` subprocess with three callers, over the real Redis and Wrapper;
and the observability test's logged server (one copy of the canaries)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from hybridcache.server.api.auth import token_sha256
from hybridcache_dev.stack.redis_process import free_port
from tests.faults.stack import Stack, stack
from tests.integration.test_observability import logged_server  # noqa: F401

ACME_TOKEN = "acme-secret-token-7c1f"
GLOBEX_TOKEN = "globex-secret-token-93ab"
OPS_TOKEN = "ops-secret-token-51d0"
TOKENS = (ACME_TOKEN, GLOBEX_TOKEN, OPS_TOKEN)
CALLERS = [
    {"name": "crm-acme", "token_sha256": token_sha256(ACME_TOKEN), "tenants": ["acme"]},
    {"name": "crm-globex", "token_sha256": token_sha256(GLOBEX_TOKEN), "tenants": ["globex"]},
    {"name": "ops", "token_sha256": token_sha256(OPS_TOKEN), "tenants": ["*"]},
]


def secure_env(**overrides: str) -> dict[str, str]:
    env = {
        "HYBRIDCACHE_INSECURE_DEV_MODE": "false",
        "HYBRIDCACHE_CALLERS": json.dumps(CALLERS),
        "HYBRIDCACHE_LOG_RPCS": "true",  # every refused call is logged: the logs are checked for leaks
        "HYBRIDCACHE_LOG_LEVEL": "info",
        "HYBRIDCACHE_METRICS_PORT": str(free_port()),
        "HYBRIDCACHE_HEALTH_PORT": str(free_port()),
    }
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def secure_stack() -> Iterator[Stack]:
    """Redis + Wrapper + a secure `hybridcache serve` (defaults otherwise), shared by a module."""
    with stack() as built:
        built.spawn_server(port=0, **secure_env())
        yield built
