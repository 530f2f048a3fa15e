"""OpenTelemetry tracing with the SDK's in-memory exporter: the real server (port 0), the real
development Wrapper over HTTP (a subprocess that records the traceparent it receives) and
the shipped client, whose current span becomes the service span's parent."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hybridcache.client import ClientConfig, HybridCacheClient
from hybridcache.client._trace_context import with_trace_context
from hybridcache.client.errors import NotFound
from hybridcache.server.app import Service, create_service
from hybridcache.server.ops import logs
from hybridcache.server.ops.readiness import wait_serving
from hybridcache.server.ops.tracing import Tracing, from_environment
from hybridcache.server.ops.tracing.spans import EVENT_ATTRIBUTES, SPAN_ATTRIBUTES, OtelTracing, route_of
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from hybridcache_dev.stack.redis_process import RedisProcess
from tests.conftest import WRAPPER_TOKEN, service_settings
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(60)

# The urllib3 instrumentation's own attributes (HTTP semantic conventions), next to ours.
HTTP_ATTRIBUTES = frozenset(
    {
        "http.method", "http.request.method", "http.url", "url.full", "http.route", "http.status_code",
        "http.response.status_code", "server.address", "server.port", "net.peer.name", "net.peer.port",
        "network.protocol.version", "http.flavor", "error.type",
    }
)  # fmt: skip
SECRETS = ("user-1", "Ada", "ada@", WRAPPER_TOKEN, "crm.leads.create")


class Traced:
    def __init__(
        self, service: Service, exporter: InMemorySpanExporter, provider: TracerProvider, wrapper_url: str
    ) -> None:
        self.service = service
        self.wrapper_url = wrapper_url
        self.exporter = exporter
        self.tracer = provider.get_tracer("test-caller")

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name == name]

    def rpc(self, method: str) -> ReadableSpan:
        found = wait_for(lambda: self.named(f"hybridcache.v1.HybridCache/{method}"), timeout=10, what=method)
        return found[-1]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        return [
            s for s in self.spans() if s.parent is not None and s.parent.span_id == parent.context.span_id
        ]


@pytest.fixture
def traced(dev_wrapper: Any, redis_server: RedisProcess) -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = service_settings(
        dev_wrapper.url,
        redis_server.url,
        tenants=["acme"],
        kind_policies={
            "user-profiles": {"ttl_s": 60},
            "org-units": {"ttl_s": 1.0, "refresh_ahead": 0.0},  # expires within a test
        },
    )
    service = create_service(settings, tracing=OtelTracing(provider))
    try:
        wait_serving(f"127.0.0.1:{service.port}")
        yield Traced(service, exporter, provider, dev_wrapper.url)
    finally:
        service.stop(0, drain_s=0)
        logs.set_trace_id_source(None)


@pytest.fixture
def client(traced: Traced) -> Iterator[HybridCacheClient]:
    with HybridCacheClient(f"127.0.0.1:{traced.service.port}", ClientConfig(bearer_token="unused")) as c:
        yield c


def wrapper_traceparents(admin: WrapperAdmin) -> list[str]:
    return list(admin.stats()["traceparents"])


def test_one_trace_crosses_client_service_and_wrapper(
    traced: Traced, client: HybridCacheClient, wrapper_admin: WrapperAdmin
) -> None:
    with traced.tracer.start_as_current_span("caller") as caller:
        client.get_user_profile("acme", "user-1")  # on demand, not cached yet: a Wrapper fetch
    trace_id = caller.get_span_context().trace_id
    server = traced.rpc("GetUserProfile")
    assert server.kind is trace.SpanKind.SERVER
    assert server.context.trace_id == trace_id, "the service span is not in the caller's trace"
    assert server.parent is not None
    assert server.parent.span_id == caller.get_span_context().span_id
    (fetch,) = [s for s in traced.children(server) if s.name == "hybridcache.fetch_item"]
    (http,) = traced.children(fetch)
    assert http.kind is trace.SpanKind.CLIENT
    assert http.attributes is not None
    assert str(http.attributes["url.full"]).endswith("/api/tenants/acme/users/{key}/profile")
    expected = ["00", f"{trace_id:032x}", f"{http.context.span_id:016x}"]  # the flags may add "random"
    assert expected in wait_for(
        lambda: [tp.split("-")[:3] for tp in wrapper_traceparents(wrapper_admin)],
        timeout=10,
        what="traceparents at the Wrapper",
    ), "the Wrapper did not receive the HTTP span's traceparent"
    assert [event.name for event in server.events] == ["cache.miss"]
    assert server.attributes is not None
    assert server.attributes["hybridcache.tenant_id"] == "acme"
    assert server.attributes["rpc.grpc.status_code"] == 0


def test_hits_and_errors_are_recorded_on_the_server_span(traced: Traced, client: HybridCacheClient) -> None:
    client.get_credit_cost("acme", "crm.leads.create")
    span = traced.rpc("GetCreditCost")
    assert span.parent is None  # no caller span: a new trace
    assert [event.name for event in span.events] == ["cache.hit"]
    assert span.events[0].attributes is not None
    assert span.events[0].attributes["hybridcache.kind"] == "credit-costs"
    assert traced.children(span) == []  # a hit calls nothing
    with pytest.raises(NotFound):
        client.get_credit_cost("acme", "no.such.code")
    refused = traced.rpc("GetCreditCost")
    assert refused.attributes is not None
    assert refused.attributes["rpc.grpc.status_code"] == 5
    assert refused.status.is_ok  # an answer, not a failure of the service


def test_concurrent_misses_show_one_fetch_and_one_single_flight_wait(
    traced: Traced, client: HybridCacheClient, wrapper_admin: WrapperAdmin
) -> None:
    with wrapper_admin.faults(latencyMs=400):
        threads = [threading.Thread(target=client.get_org_unit, args=("acme", "org-sales")) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
    spans = wait_for(
        lambda: len(traced.named("hybridcache.v1.HybridCache/GetOrgUnit")) == 2, timeout=10, what="2"
    )
    assert spans
    events = sorted(e.name for s in traced.named("hybridcache.v1.HybridCache/GetOrgUnit") for e in s.events)
    assert events == ["cache.miss", "cache.singleflight_wait"]


def test_a_stale_answer_is_an_event_and_the_failed_fetch_an_error_span(
    traced: Traced, client: HybridCacheClient, wrapper_admin: WrapperAdmin
) -> None:
    client.get_org_unit("acme", "org-sales")  # stored, expires after 1 s
    with wrapper_admin.faults(failStatus=503):
        wait_for(
            lambda: client.get_org_unit("acme", "org-sales").provenance.source == pb.SOURCE_STALE,
            timeout=15,
            what="a stale answer once the entry expired with the Wrapper failing",
        )
    stale = traced.rpc("GetOrgUnit")
    assert [event.name for event in stale.events] == ["cache.stale"]
    assert stale.status.is_ok  # an answer was served
    (fetch,) = [s for s in traced.children(stale) if s.name == "hybridcache.fetch_item"]
    assert fetch.status.status_code is trace.StatusCode.ERROR
    assert fetch.status.description == "WRAPPER_ERROR"
    assert len(traced.children(fetch)) == 3  # the first attempt and two retries, each an HTTP span


def test_a_watch_stream_is_one_span_in_the_callers_trace(traced: Traced) -> None:
    with (
        grpc.insecure_channel(f"127.0.0.1:{traced.service.port}") as channel,
        traced.tracer.start_as_current_span("caller") as caller,
    ):
        stream = pb_grpc.HybridCacheStub(channel).WatchChanges(
            pb.WatchChangesRequest(tenant_ids=["acme"]), metadata=with_trace_context(()), timeout=20
        )
        next(stream)  # the first message confirms the subscription
        stream.cancel()
    span = traced.rpc("WatchChanges")
    assert span.context.trace_id == caller.get_span_context().trace_id
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == 1  # CANCELLED, by the caller


def test_snapshot_loads_are_spans_with_the_http_call_inside(traced: Traced) -> None:
    loads = wait_for(lambda: traced.named("hybridcache.snapshot_load"), timeout=10, what="snapshot spans")
    kinds = {span.attributes["hybridcache.kind"] for span in loads if span.attributes is not None}
    assert kinds == {"credit-costs", "role-permissions", "user-status", "feature-flags"}
    for load in loads:
        assert load.attributes is not None
        assert load.attributes["hybridcache.tenant_id"] == "acme"
        items = load.attributes["hybridcache.items"]
        assert isinstance(items, int), items
        assert items > 0
        assert [child.kind for child in traced.children(load)] == [trace.SpanKind.CLIENT]


def test_no_attribute_beyond_the_allowlist_and_no_ids_or_secrets(
    traced: Traced, client: HybridCacheClient
) -> None:
    with traced.tracer.start_as_current_span("caller"):
        client.get_user_profile("acme", "user-1")
        client.check_permission("acme", "user-1", "crm.leads.create")
        client.get_credit_cost("acme", "crm.leads.create")
    wait_for(lambda: traced.named("hybridcache.v1.HybridCache/GetCreditCost"), timeout=10, what="spans")
    for span in traced.spans():
        if span.name == "caller":
            continue
        attributes = dict(span.attributes or {})
        assert set(attributes) <= SPAN_ATTRIBUTES | HTTP_ATTRIBUTES, f"{span.name}: {sorted(attributes)}"
        for event in span.events:
            assert set(event.attributes or {}) <= EVENT_ATTRIBUTES, f"{span.name}/{event.name}"
            attributes.update({f"event.{k}": v for k, v in (event.attributes or {}).items()})
        for value in attributes.values():
            assert not any(secret in str(value) for secret in SECRETS), f"{span.name} carries {value!r}"


def test_the_rpc_log_line_carries_the_trace_id(
    traced: Traced, client: HybridCacheClient, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="hybridcache.rpc"),
        traced.tracer.start_as_current_span("c") as c,
    ):
        client.get_credit_cost("acme", "crm.leads.create")
    traced.rpc("GetCreditCost")
    (record,) = [r for r in caplog.records if r.name == "hybridcache.rpc" and r.getMessage() == "rpc"]
    assert getattr(record, "trace_id", None) == f"{c.get_span_context().trace_id:032x}"


def test_off_by_default_and_on_when_asked() -> None:
    assert type(from_environment({})) is Tracing
    assert type(from_environment({"OTEL_TRACES_EXPORTER": "none"})) is Tracing
    assert type(from_environment({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"})) is Tracing
    try:
        console = from_environment({"OTEL_TRACES_EXPORTER": "console"})
        assert type(console) is OtelTracing
        console.shutdown()  # its batch thread
        with pytest.raises(ValueError, match="unknown exporter 'zipkin'"):
            from_environment({"OTEL_TRACES_EXPORTER": "zipkin"})
    finally:
        logs.set_trace_id_source(None)


def test_client_adds_traceparent_only_inside_a_span() -> None:
    base = (("authorization", "Bearer t"),)
    assert with_trace_context(base) == base
    provider = TracerProvider()
    with provider.get_tracer("t").start_as_current_span("s") as span:
        metadata = dict(with_trace_context(base))
    context = span.get_span_context()
    assert metadata["traceparent"].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")


def test_route_of_keeps_only_the_tenant() -> None:
    assert route_of("/api/tenants/acme/users/user-1/profile") == "/api/tenants/acme/users/{key}/profile"
    assert route_of("/api/tenants/acme/snapshots/credit-costs") == "/api/tenants/acme/snapshots/credit-costs"
    assert route_of("/api/tenants/acme/credit-costs/crm.x?a=b") == "/api/tenants/acme/credit-costs/{key}"


def test_traced_handlers_run_on_the_gates_lane(traced: Traced) -> None:
    """The gate marks each behaviour with its lane's pool; the span wrapper must keep the mark,
    or grpc would run every traced call on its default pool."""
    spans = traced.service.tracing.interceptors()[0]
    pool = traced.service.lanes.unary.pool

    def behavior(request: Any, context: Any) -> Any:
        return request

    behavior.experimental_thread_pool = pool  # type: ignore[attr-defined]
    handler: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(behavior)
    details = type("Details", (), {"method": "/hybridcache.v1.HybridCache/GetCreditCost"})()
    wrapped = spans.intercept_service(lambda _d: handler, details)
    assert wrapped.unary_unary is not behavior
    assert wrapped.unary_unary.experimental_thread_pool is pool
