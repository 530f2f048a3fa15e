"""The whole system under test, real parts only: a private redis-server, the development
Wrapper (a subprocess over SQLite, publishing on that Redis), fault proxies, and the server
(in this process, `create_service`, or as a `hybridcache serve` subprocess).

    Wrapper ──publish──► Redis ◄──(FaultProxy)── server ──(FaultProxy)──► Wrapper /api

The Wrapper publishes straight to Redis; the proxies sit only on the server's own paths.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybridcache.server.app import Service, create_service
from hybridcache.server.ops.readiness import wait_serving
from hybridcache_dev.harness import wrapper_admin as harness_admin
from hybridcache_dev.harness.serve_process import ServeProcess
from hybridcache_dev.stack.redis_process import RedisProcess, free_port
from hybridcache_dev.wrapper import DevWrapperProcess, launch
from tests.conftest import WRAPPER_TOKEN, service_settings
from tests.faults.history import Request, canonical, flag_value, status_value
from tests.faults.proxy import FaultProxy

TENANTS = ("acme", "globex")


class WrapperAdmin(harness_admin.WrapperAdmin):
    """The harness's admin client with the tests' token, and the truth as the checkers compare it."""

    def __init__(self, url: str, token: str = WRAPPER_TOKEN) -> None:
        super().__init__(url, token)

    # --- the truth

    def truth(self, request: Request) -> str:
        """The Wrapper's current value of a request's entity, normalised like the answers."""
        t, k = request.tenant, request.key
        if request.op == "credit-cost":
            return canonical(self.item(f"{t}/credit-costs/{k}")["cost"])
        if request.op == "user-status":
            item = self.item(f"{t}/users/{k}/status")
            return status_value(item["active"], item["roles"])
        if request.op == "flag":
            item = self.item(f"{t}/feature-flags/{k}")
            return flag_value(item["enabled"], item["value"] or "")
        if request.op == "profile":
            return str(self.item(f"{t}/users/{k}/profile")["title"])
        if request.op == "org-unit":
            return str(self.item(f"{t}/org-units/{k}")["name"])
        raise ValueError(f"no truth for {request.op}")

    def truths(self, requests: list[Request]) -> dict[tuple[str, str, str], str]:
        return {r.entity: self.truth(r) for r in requests if r.op != "permission"}


@dataclass
class Stack:
    redis: RedisProcess
    wrapper: DevWrapperProcess
    admin: WrapperAdmin
    redis_proxy: FaultProxy | None = None
    wrapper_proxy: FaultProxy | None = None
    service: Service | None = None
    server: ServeProcess | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str:
        if self.server is not None:
            return self.server.target
        assert self.service is not None
        return f"127.0.0.1:{self.service.port}"

    @property
    def service_redis_url(self) -> str:
        return self.redis_proxy.url if self.redis_proxy else self.redis.url

    @property
    def service_wrapper_url(self) -> str:
        return self.wrapper_proxy.http_url if self.wrapper_proxy else self.wrapper.url

    def start_service(self, **overrides: Any) -> Service:
        settings = service_settings(self.service_wrapper_url, self.service_redis_url, **overrides)
        self.service = create_service(settings)
        wait_serving(self.target, timeout=30)
        return self.service

    def spawn_server(self, *, port: int = 0, **env: str) -> ServeProcess:
        """`hybridcache serve` as a subprocess (its own GIL: the load here does not slow it)."""
        env_all = self.server_env(port or free_port(), **env)
        self.server = ServeProcess(env_all, self.workdir / f"server-{env_all['HYBRIDCACHE_PORT']}.log")
        self.server.start()
        return self.server

    def server_env(self, port: int, **overrides: str) -> dict[str, str]:
        """Environment for a `hybridcache serve` subprocess of this stack."""
        env = {
            "HYBRIDCACHE_HOST": "127.0.0.1",
            "HYBRIDCACHE_PORT": str(port),
            "HYBRIDCACHE_WRAPPER_URL": self.service_wrapper_url,
            "HYBRIDCACHE_WRAPPER_TOKEN": WRAPPER_TOKEN,
            "HYBRIDCACHE_REDIS_URL": self.service_redis_url,
            "HYBRIDCACHE_INSECURE_DEV_MODE": "true",
            "HYBRIDCACHE_TENANTS": ",".join(TENANTS),
            "HYBRIDCACHE_RESYNC_JITTER_S": "0",
            "HYBRIDCACHE_LOG_RPCS": "false",
            "HYBRIDCACHE_LOG_FORMAT": "json",
            "HYBRIDCACHE_LOG_LEVEL": "warning",
        }
        env.update(overrides)
        return env

    def close(self) -> None:
        """Stop the server (the ExitStack in `stack()` stops the rest, in reverse order)."""
        if self.service is not None:
            self.service.stop(0)
            self.service = None
        if self.server is not None:
            self.server.stop()
        self.admin.close()


@contextlib.contextmanager
def stack(
    *,
    redis_proxy: bool = False,
    wrapper_proxy: bool = False,
    redis_down_filter: Callable[[], Callable[[bytes], bytes]] | None = None,
) -> Iterator[Stack]:
    """Redis + Wrapper (+ proxies); start the server with `Stack.start_service(...)`.
    `redis_down_filter`: applied by the Redis proxy to what Redis sends the server."""
    with contextlib.ExitStack() as cleanup:
        tmp = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="hc-faults-"))
        redis = cleanup.enter_context(RedisProcess())  # stopped and its directory removed at exit
        wrapper = cleanup.enter_context(
            launch(redis.url, token=WRAPPER_TOKEN, db_path=str(Path(tmp) / "wrapper.db"), app="crm")
        )
        built = Stack(redis=redis, wrapper=wrapper, admin=WrapperAdmin(wrapper.url), workdir=Path(tmp))
        if redis_proxy:
            built.redis_proxy = cleanup.enter_context(FaultProxy(redis.port, down_filter=redis_down_filter))
        if wrapper_proxy:
            built.wrapper_proxy = cleanup.enter_context(FaultProxy(wrapper.port))
        cleanup.callback(built.close)  # first out: the server stops before its proxies
        yield built


def health_status(target: str, timeout: float = 0.5) -> str:
    """The server's overall health ("SERVING", "NOT_SERVING", or the RPC error code)."""
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
    except grpc.RpcError as exc:
        return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def spare_port() -> int:
    return free_port()


def now() -> float:
    return time.monotonic()
