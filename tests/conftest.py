"""Shared fixtures: a real redis-server on a free port, the real development Wrapper over
HTTP, and the real gRPC server on port 0. Nothing here is a mock."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from hybridcache.server.app import Service, create_service
from hybridcache.server.config import Settings
from hybridcache.server.ops.readiness import wait_serving
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from hybridcache_dev.stack.redis_process import RedisProcess
from hybridcache_dev.wrapper import launch

WRAPPER_TOKEN = "test-wrapper-token"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    """A redis-server shared by tests that neither kill nor restart it."""
    with RedisProcess() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A redis-server of this test's own, free to kill and restart."""
    with RedisProcess() as server:
        yield server


@pytest.fixture(scope="module")
def dev_wrapper(redis_server: RedisProcess) -> Iterator[Any]:
    """The development Wrapper with fresh seed data for each test module."""
    with tempfile.TemporaryDirectory(prefix="hybridcache-wrapper-") as tmp:
        process = launch(
            redis_server.url,
            token=WRAPPER_TOKEN,
            db_path=str(Path(tmp) / "wrapper.db"),
            publish_mode="both",
            app="crm",
        )
        try:
            yield process
        finally:
            process.stop()


@pytest.fixture
def wrapper_admin(dev_wrapper: Any) -> Iterator[WrapperAdmin]:
    """The admin client of the module's development Wrapper."""
    with WrapperAdmin(dev_wrapper.url, WRAPPER_TOKEN) as admin:
        yield admin


def service_settings(wrapper_url: str, redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "wrapper_url": wrapper_url,
        "wrapper_token": WRAPPER_TOKEN,
        "redis_url": redis_url,
        "insecure_dev_mode": True,
        "tenants": ["acme", "globex"],
        "resync_jitter_s": 0.0,
        "grace_s": 1.0,
        "drain_s": 0.0,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture
def start_service() -> Iterator[Callable[[Settings], Service]]:
    """Start services with given settings; each waits for SERVING and stops at teardown."""
    started: list[Service] = []

    def start(settings: Settings) -> Service:
        service = create_service(settings)
        started.append(service)
        if settings.tenants:
            wait_serving(f"127.0.0.1:{service.port}")
        return service

    yield start
    for service in started:
        service.stop(0, drain_s=0)


@pytest.fixture
def service(
    start_service: Callable[[Settings], Service], dev_wrapper: Any, redis_server: RedisProcess
) -> Service:
    return start_service(service_settings(dev_wrapper.url, redis_server.url))


@pytest.fixture
def channel(service: Service) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.Channel) -> pb_grpc.HybridCacheStub:
    return pb_grpc.HybridCacheStub(channel)
