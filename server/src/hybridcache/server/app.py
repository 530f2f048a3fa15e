"""Assembles the service from its parts and runs it: `create_service(settings) -> Service`.

    settings ─► WrapperClient ─► HybridCache (core) ◄── events (Redis subscriber)
                                     ▲                        │
                      HybridCacheServicer (unary)      ChangeHub ─► WatchChanges streams
                                     ▲
                 grpc.server + health + reflection  (port 0 in tests)

Start order matters: the subscriber starts before the replica loads, so a change published
during the load is not lost (the core keeps the newer of snapshot and event per key), and
health turns SERVING only when the configured tenants' replicas are loaded.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from hybridcache.server.auth import Authenticator, Caller
from hybridcache.server.config import Settings
from hybridcache.server.core import DEFAULT_POLICIES, HybridCache, KindPolicy
from hybridcache.server.core.errors import CacheError
from hybridcache.server.core.kinds import Kind
from hybridcache.server.gate import CallerLimits, Gate
from hybridcache.server.metrics import Metrics
from hybridcache.server.servicer import HybridCacheServicer
from hybridcache.server.wrapper_client import WrapperClient
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["HybridCache"].full_name
_WARM_RETRY_S = (0.2, 5.0)  # backoff bounds while the Wrapper is not answering at start


def policies_from(settings: Settings) -> Mapping[Kind, KindPolicy]:
    policies = dict(DEFAULT_POLICIES)
    for kind, overrides in settings.kind_policies.items():
        policies[kind] = dataclasses.replace(policies[kind], **overrides)
    return policies


class Service:
    """One running hybridcache server. `stop()` is graceful and idempotent."""

    def __init__(self, settings: Settings, *, extra_handlers: Sequence[grpc.GenericRpcHandler] = ()) -> None:
        # extra_handlers: more services on the same server, behind the same gate (the
        # benchmark's empty RPC, `hybridcache.server.bench`); none in production.
        self.settings = settings
        self.stopping = threading.Event()
        self.metrics = Metrics()
        self.wrapper = WrapperClient(
            settings.wrapper_url,
            settings.wrapper_token.get_secret_value(),
            timeout_s=settings.wrapper_timeout_s,
            retries=settings.wrapper_retries,
            max_connections=settings.wrapper_max_connections,
            on_fetch=self.metrics.observe_fetch,
        )
        # Background refreshes (stale-while-revalidate) run here, off the RPC threads.
        self._background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hybridcache-refresh")
        self.cache = HybridCache(
            self.wrapper,
            policies_from(settings),
            max_reference_entries=settings.max_reference_entries,
            submit=self._background.submit,
        )
        self.auth = Authenticator(settings.callers, insecure=settings.insecure_dev_mode)
        self.health = health.HealthServicer()
        self.servicer = HybridCacheServicer(self.cache, freshness=self.freshness)
        gate = Gate(
            self.auth,
            self.metrics,
            limits_for=self._limits_for,
            service_prefix=(SERVICE_NAME, *(_service_of(h) for h in extra_handlers)),
            log_rpcs=settings.log_rpcs,
        )
        self.server = grpc.server(
            ThreadPoolExecutor(
                max_workers=settings.rpc_workers + settings.max_streams, thread_name_prefix="hybridcache-rpc"
            ),
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            interceptors=[gate],
        )
        pb_grpc.add_HybridCacheServicer_to_server(self.servicer, self.server)
        self.server.add_generic_rpc_handlers(tuple(extra_handlers))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        self.port = _bind(self.server, settings)
        self._set_serving(False)
        self._warm_thread = threading.Thread(target=self._warm_up, name="hybridcache-warm", daemon=True)

    def _limits_for(self, caller: Caller) -> CallerLimits:
        entry = self.auth.limits_entry(caller)
        return CallerLimits(
            rate_per_s=float(entry.get("rate_per_s", self.settings.caller_rate_per_s)),
            burst=int(entry.get("burst", self.settings.caller_burst)),
            max_in_flight=int(entry.get("max_in_flight", self.settings.caller_max_in_flight)),
        )

    def freshness(self) -> str:
        return "degraded"

    def start(self) -> Service:
        if self.settings.insecure_dev_mode:
            log.warning(
                "INSECURE DEVELOPMENT MODE: no caller authentication, every tenant readable. "
                "Never run this in production."
            )
        self.server.start()
        self._warm_thread.start()
        return self

    def _set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def _warm_up(self) -> None:
        """Load the configured tenants' replicas, retrying until the Wrapper answers; then SERVING."""
        pending = list(self.settings.tenants)
        pause = _WARM_RETRY_S[0]
        while pending and not self.stopping.is_set():
            tenant = pending[0]
            try:
                self.cache.ensure_tenant(tenant)
            except CacheError as exc:
                log.warning("replica of tenant %s not loaded yet: %s (retrying)", tenant, exc.reason)
                self.stopping.wait(pause)
                pause = min(pause * 2, _WARM_RETRY_S[1])
                continue
            pending.pop(0)
            pause = _WARM_RETRY_S[0]
        if not self.stopping.is_set():
            self._set_serving(True)
            log.info("serving", extra={"port": self.port, "tenants": len(self.settings.tenants)})

    def stop(self, grace_s: float | None = None) -> None:
        """Health NOT_SERVING, end streams, let in-flight unary RPCs finish within the grace period."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.health.enter_graceful_shutdown()
        grace = self.settings.grace_s if grace_s is None else grace_s
        self.server.stop(grace).wait()
        self._background.shutdown(wait=False, cancel_futures=True)
        self.wrapper.close()


def _bind(server: grpc.Server, settings: Settings) -> int:
    address = f"{settings.host}:{settings.port}"
    if not settings.tls_cert_file:
        return int(server.add_insecure_port(address))
    key = Path(settings.tls_key_file).read_bytes()
    cert = Path(settings.tls_cert_file).read_bytes()
    client_ca = Path(settings.tls_client_ca_file).read_bytes() if settings.tls_client_ca_file else None
    credentials = grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
    return int(server.add_secure_port(address, credentials))


def _service_of(handler: grpc.GenericRpcHandler) -> str:
    name: str = handler.service_name()  # grpc's generic handlers built by method_handlers_generic_handler
    return name


def create_service(settings: Settings, *, extra_handlers: Sequence[grpc.GenericRpcHandler] = ()) -> Service:
    """Build and start a service; `service.port` is the bound port (settings.port 0: a free one)."""
    return Service(settings, extra_handlers=extra_handlers).start()
