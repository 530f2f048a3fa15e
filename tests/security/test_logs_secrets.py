"""Nothing sensitive in logs, on the paths grpc itself logs before any of our code runs:
a header value that is not UTF-8 (grpc logged it in full, bearer token included) and a body
that is not protobuf (INTERNAL plus a ~490-byte ERROR traceback per call, anyone could flood
the log). The canaries and the server are the observability test's (`logged_server`): a real
`hybridcache serve` process, its stdout and stderr in one file."""

from __future__ import annotations

import logging
import sys
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from hybridcache.server.app import Service
from hybridcache.server.ops.logs import GrpcRecordGuard
from hybridcache.v1 import hybridcache_pb2 as pb
from tests.integration.test_observability import (
    CANARIES,
    CANARY_CALLER_TOKEN,
    LoggedServer,
    scrape,
    value,
)
from tests.integration.test_watch_stream import _error_reason
from tests.security.raw_h2 import RawH2

pytestmark = pytest.mark.timeout(120)

GOOD = [(b"authorization", f"Bearer {CANARY_CALLER_TOKEN}".encode())]
NOT_UTF8 = [(b"authorization", f"Bearer {CANARY_CALLER_TOKEN}".encode() + b"\xff")]
GARBAGE = [b"\xff\xff\xff", b"\x0a\xff\x01CANARY", b"\x12\x05CAN", b"\x08" * 9]
COST = "/hybridcache.v1.HybridCache/GetCreditCost"
FLOOD = 200


def _host_port(target: str) -> tuple[str, int]:
    host, port = target.rsplit(":", 1)
    return host, int(port)


def test_undecodable_headers_and_bodies_leave_no_secret_and_no_flood(logged_server: LoggedServer) -> None:
    target, log_path, _wrapper, metrics_port = logged_server
    before = len(log_path.read_bytes())
    good_body = pb.GetCreditCostRequest(
        tenant_id="acme", operation_code="crm.leads.create"
    ).SerializeToString()
    with RawH2(*_host_port(target)) as h2c:
        for _ in range(FLOOD):
            answer = h2c.wait(h2c.call(COST, good_body, NOT_UTF8))
            assert answer.grpc_status == 16, f"a token grpc could not decode was accepted: {answer}"
        for i in range(FLOOD):
            body = GARBAGE[i % len(GARBAGE)]
            answer = h2c.wait(h2c.call(COST, body, GOOD))
            assert answer.grpc_status == 3, (
                f"malformed body {body!r}: {answer.grpc_status} {answer.grpc_message}"
            )
            assert "not a valid hybridcache.v1.GetCreditCostRequest" in answer.grpc_message
            # Unauthenticated garbage is refused as unauthenticated: nothing is parsed for it.
            answer = h2c.wait(h2c.call(COST, body, []))
            assert answer.grpc_status == 16, answer
            answer = h2c.wait(h2c.call("/hybridcache.v1.HybridCache/WatchChanges", body, GOOD))
            assert answer.grpc_status == 3, answer
            # Health parses in its handler too (no credentials needed there).
            answer = h2c.wait(h2c.call("/grpc.health.v1.Health/Check", body, []))
            assert answer.grpc_status == 3, answer
        check = health_pb2.HealthCheckRequest().SerializeToString()
        answer = h2c.wait(h2c.call("/grpc.health.v1.Health/Check", check, []))
        assert answer.grpc_status == 0, "the server stopped answering health"
    samples = scrape(metrics_port)
    assert value(samples, "hybridcache_malformed_requests_total", grpc_method="GetCreditCost") >= FLOOD
    assert value(samples, "hybridcache_malformed_requests_total", grpc_method="WatchChanges") >= FLOOD
    assert value(samples, "hybridcache_grpc_log_records_total", reason="metadata-not-utf8") >= FLOOD
    logs = log_path.read_bytes()[before:].decode("utf-8", "replace")
    found = [canary for canary in CANARIES if canary in logs]
    assert not found, f"log contains {found}:\n{logs[-3000:]}"
    assert "Traceback" not in logs, f"a traceback was logged:\n{logs[-3000:]}"
    other_lines = [line for line in logs.splitlines() if '"event": "rpc"' not in line]
    # 1,000 bad requests: a handful of summary lines (one per reason and method a minute).
    assert len(other_lines) <= 6, "a flood of bad requests became a flood of log lines:\n" + "\n".join(
        other_lines[:20]
    )


def _record(
    msg: str, args: tuple[object, ...] = (), *, exc: BaseException | None = None
) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("grpc._server", logging.ERROR, __file__, 1, msg, args, exc_info)


def test_the_guard_keeps_no_value_of_a_grpc_record() -> None:
    guard = GrpcRecordGuard()
    try:
        raise ValueError("CANARY in an exception")
    except ValueError as caught:
        record = _record("Exception calling application: %s", ("CANARY",), exc=caught)
    assert guard.filter(record) is True
    assert record.getMessage() == "Exception calling application: %s (ValueError)"
    assert record.exc_info is None
    for text in ("Invalid encoding on b'Bearer CANARY\\xff'", 'unknown "CANARY" header', "odd <CANARY>"):
        record = _record(text)
        kept = guard.filter(record)
        assert not kept or "CANARY" not in record.getMessage(), record.getMessage()
    assert guard.counts["metadata-not-utf8"] == 1


def test_the_guard_summarises_a_flood_once(caplog: pytest.LogCaptureFixture) -> None:
    guard = GrpcRecordGuard(interval_s=3600)
    with caplog.at_level(logging.WARNING, logger="hybridcache.grpc"):
        for _ in range(100):
            assert guard.filter(_record("Exception deserializing message!", exc=sys.exc_info()[1])) is False
    summaries = [r for r in caplog.records if r.name == "hybridcache.grpc"]
    assert len(summaries) == 1, [r.getMessage() for r in summaries]
    assert guard.counts["message-not-parsable"] == 100


@pytest.mark.parametrize("method", sorted(pb.DESCRIPTOR.services_by_name["HybridCache"].methods_by_name))
def test_every_method_answers_a_malformed_body_with_invalid_argument(service: Service, method: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        path = f"/hybridcache.v1.HybridCache/{method}"
        if method == "WatchChanges":
            call: Any = channel.unary_stream(path, request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.RpcError) as caught:
                next(call(b"\xff\xff", timeout=5))
        else:
            call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.RpcError) as caught:
                call(b"\xff\xff", timeout=5)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert _error_reason(caught.value) == "MALFORMED_REQUEST"
    assert f"hybridcache.v1.{method}Request" in (caught.value.details() or "")
