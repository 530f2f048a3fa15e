"""Assembles the service from its parts and runs it: `create_service(settings) -> Service`.

    settings ─► WrapperClient ─► HybridCache (core) ◄── ChangeFeed (Redis reader, events/)
                                     ▲                        │ ChangeNotice
                      HybridCacheServicer (unary)      ChangeHub ─► WatchChanges streams
                                     ▲
       grpc.server + Gate (auth, limits, lanes, metrics, logs) + health + reflection  (port 0 in tests)

Each kind of call runs on threads of its own (api/capacity.py): unary calls, WatchChanges
streams, reflection, health; the gate admits a call to its lane before it takes a thread.

Start order matters: the change feed starts before any replica loads, so a change published
during a load is not lost (the core keeps the newer of snapshot and event per key), and
health turns SERVING only when the configured tenants' replicas are loaded.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from hybridcache.client.backoff import Backoff, BackoffPolicy
from hybridcache.server.api.auth import Authenticator, Caller
from hybridcache.server.api.capacity import Lanes, MessageWatch
from hybridcache.server.api.catch_up import FleetResume
from hybridcache.server.api.gate import CallerLimits, Gate, current_caller
from hybridcache.server.api.reflection import enable_reflection
from hybridcache.server.api.registration import SERVICE_NAME, add_hybridcache_service, add_parsing_service
from hybridcache.server.api.servicer import HybridCacheServicer
from hybridcache.server.api.snapshot import SnapshotLister
from hybridcache.server.api.watch import serve_watch
from hybridcache.server.config import Settings
from hybridcache.server.core import DEFAULT_POLICIES, HybridCache, KindPolicy
from hybridcache.server.core.errors import CacheError
from hybridcache.server.core.kinds import Kind, Tier
from hybridcache.server.events import ChangeFeed, FeedConfig
from hybridcache.server.events.stream_replay import StreamReplay
from hybridcache.server.events.verifier import Verifier, VerifierConfig
from hybridcache.server.hub import AllowedTenants, ChangeHub, HubEvent, StreamLimiter
from hybridcache.server.hub.tokens import parse_fleet_key
from hybridcache.server.ops.heap import HeapSettler
from hybridcache.server.ops.logs import grpc_guard_metrics
from hybridcache.server.ops.metrics import Metrics, MetricsTLS
from hybridcache.server.ops.probe_server import ProbeServer
from hybridcache.server.ops.telemetry import register_collectors
from hybridcache.server.ops.tracing import Tracing
from hybridcache.server.ops.tracing import from_environment as tracing_from_environment
from hybridcache.server.wrapper.client import WrapperClient
from hybridcache.server.wrapper.health import WrapperHealth
from hybridcache.server.wrapper.mapping import DEFAULT_MAP, load_map
from hybridcache.v1 import hybridcache_pb2 as pb

log = logging.getLogger(__name__)

# While the Wrapper is not answering at start; jittered so a fleet started together spreads out.
_WARM_RETRY = BackoffPolicy(initial_s=0.2, cap_s=5.0)
_SETTLE_RETRY = BackoffPolicy(initial_s=0.1, cap_s=5.0)  # reading the stream's end after a load
_SETTLE_WAIT_S = 5.0  # at most this long for the stream reader to pass the loads before SERVING
_REFRESH_JITTER = 0.1  # periodic full refresh every interval ±10%, so replicas do not align


def policies_from(settings: Settings) -> Mapping[Kind, KindPolicy]:
    policies = dict(DEFAULT_POLICIES)
    for kind, override in settings.kind_policies.items():
        policies[kind] = override.apply(policies[kind])
    return policies


class Service:
    """One running hybridcache server. `stop()` is graceful and idempotent."""

    def __init__(
        self,
        settings: Settings,
        *,
        extra_handlers: Sequence[grpc.GenericRpcHandler] = (),
        tracing: Tracing | None = None,
        on_change_applied: Callable[[HubEvent], None] | None = None,
    ) -> None:
        # extra_handlers: more services on the same server, behind the same gate (the
        # benchmark's empty RPC, `hybridcache_dev.bench`); none in production.
        # on_change_applied: called with each change right after the cache applied it (on the
        # ingesting thread, before WatchChanges subscribers get it); the benchmark times
        # "published -> applied" with it. Keep it quick: it delays the next event.
        self.settings = settings
        self.tracing = tracing_from_environment() if tracing is None else tracing  # OTEL_*: off by default
        self.stopping = threading.Event()
        self.metrics = Metrics()
        # Replicas are long-lived objects the cyclic collector need not rescan (ops/heap.py).
        self.heap = HeapSettler() if settings.gc_freeze else None
        self.wrapper = WrapperClient(
            settings.wrapper_url,
            settings.wrapper_token.get_secret_value(),
            timeout_s=settings.wrapper_timeout_s,
            retries=settings.wrapper_retries,
            max_connections=settings.wrapper_max_connections,
            on_fetch=self.metrics.observe_fetch,
            on_snapshot=self._snapshot_loaded,
            max_concurrent_snapshots=settings.max_concurrent_snapshot_loads,
            health=WrapperHealth(
                failure_threshold=settings.wrapper_breaker_failures,
                reset_timeout_s=settings.wrapper_breaker_reset_s,
            ),
            mapping=load_map(settings.wrapper_map) if settings.wrapper_map else DEFAULT_MAP,
        )
        # Background refreshes (stale-while-revalidate) run here, off the RPC threads.
        self._background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hybridcache-refresh")
        self.cache = HybridCache(
            self.tracing.instrument_wrapper(self.wrapper),
            policies_from(settings),
            max_reference_entries=settings.max_reference_entries,
            submit=self._background.submit,
            version_window=settings.event_version_window,
            wrapper_known_down=self.wrapper.known_down,
        )
        fleet_key = _fleet_key(settings)
        self.hub = ChangeHub(
            retain=settings.watch_retain,
            subscriber_buffer=settings.watch_subscriber_buffer,
            fleet_key=fleet_key,
        )
        self.feed = ChangeFeed(
            self.cache,
            self._applied_sink(on_change_applied),  # every applied change (and resync): to WatchChanges
            FeedConfig.from_settings(settings),
            on_lag=self.metrics.event_lag_seconds.observe,
            positions=self.hub if fleet_key is not None else None,  # fleet tokens: stream positions
        )
        # Anti-entropy: replicas compared with the Wrapper's digests, repairs published like events.
        self.verifier = Verifier(
            self.cache,
            self.wrapper,
            self.hub.publish,
            VerifierConfig(
                kinds=tuple(k for k, p in policies_from(settings).items() if p.tier is Tier.REPLICA),
                interval_s=settings.verify_interval_s,
                bucket_count=settings.verify_buckets,
                refresh_interval_s=settings.refresh_interval_s,
            ),
        )
        self.auth = Authenticator(settings.callers, insecure=settings.insecure_dev_mode)
        self._dev_limits = _dev_limits(settings)
        self.health = health.HealthServicer()
        self.stream_limiter = StreamLimiter(
            max_streams=settings.max_streams, max_per_caller=settings.max_streams_per_caller
        )
        # Fleet tokens from other replicas: checked against the Redis stream, and replayed
        # from it when older than the ring (api/catch_up.py).
        self.stream_replay = (
            StreamReplay(
                settings.redis_url,
                settings.event_apps[0],
                self.feed.config.decoder(),
                max_entries=max(settings.watch_retain, 1),
            )
            if fleet_key is not None
            else None
        )
        fleet_resume = (
            FleetResume(self.hub, self.cache, self.feed.ingestor.order, self.stream_replay)
            if self.stream_replay is not None
            else None
        )
        watch = functools.partial(
            serve_watch,
            subscribe=fleet_resume.subscribe if fleet_resume is not None else None,
            hub=self.hub,
            limiter=self.stream_limiter,
            allowed_tenants=_allowed_tenants,
            heartbeat_s=settings.watch_heartbeat_s,
            messages_per_s=settings.watch_messages_per_s,
            stop=self.stopping,
        )
        # WatchChanges is registered apart (below): its messages leave pre-serialized.
        self.servicer = HybridCacheServicer(
            self.tracing.traced_cache(self.cache),
            freshness=self.freshness,
            stats_extra=self._stats_extra,
            repairing=self.feed.pending_repairs,  # keys awaiting a refetch: REPAIRING
            snapshots=SnapshotLister(self.cache, self.hub, self.feed.apply_order, freshness=self.freshness),
        )
        # Each open WatchChanges stream holds a thread in the sync server: the stream lane
        # has one per allowed stream; unary calls, reflection and health have their own.
        self.lanes = Lanes.build(
            unary_threads=settings.rpc_workers,
            unary_limit=settings.max_concurrent_rpcs,
            streams=settings.max_streams,
            reflection=settings.reflection_workers,
            health=settings.health_workers,
        )
        self.message_watch = MessageWatch(on_timeout=self.metrics.request_message_timeouts.inc)
        self.server = _grpc_server(
            settings, [*self.tracing.interceptors(), self._gate(extra_handlers)], self.lanes.refusal.pool
        )
        add_hybridcache_service(self.server, self.servicer, watch, on_malformed=self._count_malformed_request)
        self.server.add_generic_rpc_handlers(tuple(extra_handlers))
        add_parsing_service(  # a garbage health request: INVALID_ARGUMENT, not INTERNAL
            self.server,
            health_pb2_grpc.add_HealthServicer_to_server,
            self.health,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            on_malformed=self._count_malformed_request,
        )
        if settings.reflection:
            enable_reflection(  # v1 and v1alpha (api/reflection.py)
                (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), self.server
            )
        self.port = _bind(self.server, settings)
        self.probe = (
            ProbeServer(
                self.health,
                settings.host,
                settings.health_port,
                max_streams=settings.max_streams_per_connection,
                reuse_port=settings.workers > 1,
            )
            if settings.health_port
            else None
        )
        register_collectors(self)
        self.metrics.add_collector(grpc_guard_metrics)  # grpc's own log records, by reason
        for method in pb.DESCRIPTOR.services_by_name["HybridCache"].methods_by_name:
            self.metrics.malformed_requests.labels(method)  # every method's series, from 0
        self._set_serving(False)
        self._threads = [
            threading.Thread(target=self._warm_up, name="hybridcache-warm", daemon=True),
            threading.Thread(target=self._refresh_periodically, name="hybridcache-refresh", daemon=True),
        ]

    # --- wiring helpers

    def _gate(self, extra_handlers: Sequence[grpc.GenericRpcHandler]) -> Gate:
        return Gate(
            self.auth,
            self.metrics,
            limits_for=self._limits_for,
            service_prefix=(SERVICE_NAME, *(_service_of(h) for h in extra_handlers)),
            lanes=self.lanes,
            watch=self.message_watch,
            request_timeout_s=self.settings.request_message_timeout_s,
            log_rpcs=self.settings.log_rpcs,
        )

    def _limits_for(self, caller: Caller) -> CallerLimits:
        if self.auth.insecure:
            return self._dev_limits
        entry = self.auth.entry(caller)
        own = (entry.rate_per_s, entry.burst, entry.max_in_flight) if entry else (None, None, None)
        return CallerLimits(
            rate_per_s=self.settings.caller_rate_per_s if own[0] is None else own[0],
            burst=self.settings.caller_burst if own[1] is None else own[1],
            max_in_flight=self.settings.caller_max_in_flight if own[2] is None else own[2],
        )

    def _snapshot_loaded(self, tenant_id: str) -> None:
        # A load allocated, installed or not: the heap settles (replica ages come from the core).
        if self.heap is not None:
            self.heap.loaded()
        # Fleet tokens: what was read is ahead of the stream reader until it reaches the
        # stream's end as of now (ChangeHub.settle_at). Read before the load is applied, so
        # no token names a position the state has already passed.
        if self.stream_replay is not None:
            self._settle_hub()

    def _settle_hub(self, attempt: int = 0) -> None:
        replay = self.stream_replay
        if replay is None or self.stopping.is_set():
            return
        head = replay.head()
        if head is not None:
            self.hub.settle_at(head)
            return
        # Redis unreadable: no position is named until the end is known (a resume by
        # position reads it too, api/catch_up.py); retried off this thread.
        self.hub.settle_unknown()
        retry = threading.Timer(_SETTLE_RETRY.delay(attempt), self._settle_hub, args=(attempt + 1,))
        retry.daemon = True
        retry.start()

    def _count_malformed_request(self, method: str) -> None:
        self.metrics.malformed_requests.labels(method).inc()

    def _stats_extra(self, response: pb.GetCacheStatsResponse, tenants: frozenset[str] | None) -> None:
        snapshot = self.feed.stats.snapshot()
        if tenants is None:
            response.events_applied = snapshot.applied + snapshot.invalidated
            response.events_rejected = sum(snapshot.rejected.values())
        else:  # rejections before a tenant is known (bad channel, bad JSON) are nobody's
            response.events_applied = sum(snapshot.changes_by_tenant.get(t, 0) for t in tenants)
            response.events_rejected = sum(snapshot.rejected_by_tenant.get(t, 0) for t in tenants)

    def freshness(self) -> str:
        return str(self.feed.freshness())

    # --- lifecycle

    def _applied_sink(
        self, on_change_applied: Callable[[HubEvent], None] | None
    ) -> Callable[[HubEvent], int]:
        """Where the feed hands each applied change: the hub, after `on_change_applied` if given."""
        if on_change_applied is None:
            return self.hub.publish
        publish = self.hub.publish

        def applied(event: HubEvent) -> int:
            try:
                on_change_applied(event)
            except Exception:  # a failing hook must not cost WatchChanges the change
                log.exception("on_change_applied hook failed")
            return publish(event)

        return applied

    def start(self) -> Service:
        if self.settings.insecure_dev_mode:
            log.warning(
                "INSECURE DEVELOPMENT MODE: no caller authentication, every tenant readable. "
                "Never run this in production."
            )
        if self.settings.metrics_port:
            self._serve_metrics()
        self.message_watch.start()
        self.server.start()
        if self.probe is not None:
            self.probe.start()
        self.feed.start()
        self.verifier.start()
        if self.heap is not None:
            self.heap.start()
        for thread in self._threads:
            thread.start()
        return self

    def _serve_metrics(self) -> None:
        """Plain HTTP without TLS; with TLS, HTTPS on the gRPC certificate (and client CA), or
        plain HTTP on localhost only when asked (a sidecar scraper)."""
        s = self.settings
        if not s.tls_cert_file:
            self.metrics.serve(s.metrics_port, s.host)
        elif s.metrics_localhost_plain:
            self.metrics.serve(s.metrics_port, "127.0.0.1")
        else:
            tls = MetricsTLS(s.tls_cert_file, s.tls_key_file, s.tls_client_ca_file)
            self.metrics.serve(s.metrics_port, s.host, tls=tls)

    def _set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def _warm_up(self) -> None:
        """Load the configured tenants' replicas, retrying until the Wrapper answers; then SERVING."""
        pending = list(self.settings.tenants)
        backoff = Backoff(_WARM_RETRY)
        while pending and not self.stopping.is_set():
            tenant = pending[0]
            try:
                self.cache.ensure_tenant(tenant)
            except CacheError as exc:
                log.warning("replica of tenant %s not loaded yet: %s (retrying)", tenant, exc.reason)
                self.stopping.wait(backoff.next_delay())
                continue
            pending.pop(0)
            backoff.reset()
        # Fleet tokens: the loads are ahead of the stream reader until it reaches the end
        # of the stream read after them; serving then means every token names a position.
        # Bounded: a reader that cannot catch up only makes tokens instance-bound meanwhile.
        settle_by = time.monotonic() + _SETTLE_WAIT_S
        while not self.hub.settled() and time.monotonic() < settle_by and not self.stopping.wait(0.005):
            pass
        if not self.stopping.is_set():
            if self.heap is not None:
                self.heap.settle_now()  # the one long pause, before any caller is sent here
            self._set_serving(True)
            log.info("serving", extra={"port": self.port, "tenants": len(self.settings.tenants)})

    def _refresh_periodically(self) -> None:
        """Back up the event path: a full resync of every loaded tenant now and then."""
        interval = self.settings.refresh_interval_s
        if interval <= 0:
            return
        while not self.stopping.wait(interval * random.uniform(1 - _REFRESH_JITTER, 1 + _REFRESH_JITTER)):
            self.feed.request_resync()

    def stop(self, grace_s: float | None = None, drain_s: float | None = None) -> None:
        """Health NOT_SERVING, end streams, keep taking calls for the drain period (balancers and
        health watchers move away), then refuse new calls and let in-flight ones finish within
        the grace period."""
        if self.stopping.is_set():
            return
        self.stopping.set()  # streams see it and end with UNAVAILABLE; clients reconnect elsewhere
        self._set_serving(False)
        drain = self.settings.drain_s if drain_s is None else drain_s
        if drain > 0:
            time.sleep(drain)  # deliberately serving while NOT_SERVING is observed
        self.health.enter_graceful_shutdown()
        grace = self.settings.grace_s if grace_s is None else grace_s
        self.server.stop(grace).wait()
        if self.probe is not None:
            self.probe.stop()
        self.verifier.stop()
        self.feed.stop()
        if self.stream_replay is not None:
            self.stream_replay.close()
        if self.heap is not None:
            self.heap.stop()
        self.message_watch.stop()
        self.lanes.shutdown()
        self._background.shutdown(wait=False, cancel_futures=True)
        self.wrapper.close()
        self.tracing.shutdown()


def _grpc_server(
    settings: Settings, interceptors: Sequence[grpc.ServerInterceptor], pool: ThreadPoolExecutor
) -> grpc.Server:
    # `pool` runs only what no lane claims (nothing registered today): the gate puts every
    # call on its lane's own pool.
    return grpc.server(
        pool,
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            # Off unless several workers share the port on purpose (HYBRIDCACHE_WORKERS):
            # otherwise a second server on the same port would silently take half the calls.
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
            # hybridcache-client pings every 30 s while calls are in flight; accept that
            # rate rather than answering GOAWAY "too_many_pings".
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            # One connection cannot open more streams than this (SETTINGS_MAX_CONCURRENT_STREAMS).
            ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        ],
        # No maximum_concurrent_rpcs: it counts every call together, so a flood would refuse
        # health probes too; the gate's lanes bound each kind of call instead.
        interceptors=list(interceptors),
    )


def _fleet_key(settings: Settings) -> bytes | None:
    """The shared resume token key when fleet tokens apply: durable mode, one event app
    (one stream), and a key set. Pub/sub mode keeps tokens bound to this process."""
    encoded = settings.resume_token_key.get_secret_value()
    if not encoded or settings.event_mode != "stream":
        return None
    if len(settings.event_apps) != 1:
        log.warning("resume tokens stay bound to this process: fleet tokens need exactly one event app")
        return None
    return parse_fleet_key(encoded)


def _dev_limits(settings: Settings) -> CallerLimits:
    """In insecure dev mode every call is the one dev caller, so a default per-caller cap
    would cap the whole server: only limits set explicitly apply there."""
    explicit = settings.model_fields_set
    return CallerLimits(
        rate_per_s=settings.caller_rate_per_s if "caller_rate_per_s" in explicit else 0.0,
        burst=settings.caller_burst,
        max_in_flight=settings.caller_max_in_flight if "caller_max_in_flight" in explicit else 0,
    )


def _allowed_tenants(_context: grpc.ServicerContext) -> AllowedTenants:
    caller = current_caller()
    return AllowedTenants(all=caller.all_tenants, tenants=caller.tenants, caller=caller.name)


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
    # grpc's generic handlers built by method_handlers_generic_handler have it; the stubs'
    # GenericRpcHandler does not.
    name: str = handler.service_name()  # type: ignore[attr-defined]
    return name


def create_service(
    settings: Settings,
    *,
    extra_handlers: Sequence[grpc.GenericRpcHandler] = (),
    tracing: Tracing | None = None,
    on_change_applied: Callable[[HubEvent], None] | None = None,
) -> Service:
    """Build and start a service; `service.port` is the bound port (settings.port 0: a free one)."""
    return Service(
        settings, extra_handlers=extra_handlers, tracing=tracing, on_change_applied=on_change_applied
    ).start()
