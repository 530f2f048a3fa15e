"""The private google.rpc.Status decoder, checked against bytes made by googleapis' classes."""

from __future__ import annotations

from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from hybridcache.client._status_details import (
    STATUS_DETAILS_KEY,
    StatusDetails,
    decode_status,
    details_from_trailers,
)


def _packed(message: object) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)  # type: ignore[arg-type]
    return detail


def _status_bytes(*details: object, code: int = 5, message: str = "no such operation") -> bytes:
    status = status_pb2.Status(code=code, message=message, details=[_packed(d) for d in details])
    return status.SerializeToString()


def test_error_info_reason_domain_and_metadata() -> None:
    info = error_details_pb2.ErrorInfo(
        reason="OPERATION_NOT_FOUND",
        domain="hybridcache.dev",
        metadata={"tenant_id": "acme", "operation_code": "crm.leads.create", "ünï": "çødé"},
    )
    decoded = decode_status(_status_bytes(info))
    assert decoded == StatusDetails(
        code=5,
        message="no such operation",
        reason="OPERATION_NOT_FOUND",
        domain="hybridcache.dev",
        metadata={"tenant_id": "acme", "operation_code": "crm.leads.create", "ünï": "çødé"},
    )


def test_retry_info_becomes_seconds() -> None:
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2, nanos=250_000_000))
    info = error_details_pb2.ErrorInfo(reason="RATE_LIMITED", domain="hybridcache.dev")
    decoded = decode_status(_status_bytes(retry, info, code=8))
    assert decoded is not None
    assert decoded.code == 8
    assert decoded.retry_delay == 2.25
    assert decoded.reason == "RATE_LIMITED"


def test_retry_info_without_delay_is_no_delay() -> None:
    decoded = decode_status(_status_bytes(error_details_pb2.RetryInfo()))
    assert decoded is not None
    assert decoded.retry_delay is None


def test_unknown_detail_types_are_skipped() -> None:
    other = error_details_pb2.DebugInfo(detail="stack")
    info = error_details_pb2.ErrorInfo(reason="X", domain="d")
    decoded = decode_status(_status_bytes(other, info))
    assert decoded is not None
    assert (decoded.reason, decoded.domain, dict(decoded.metadata)) == ("X", "d", {})


def test_status_without_details() -> None:
    assert decode_status(_status_bytes()) == StatusDetails(code=5, message="no such operation")
    assert decode_status(b"") == StatusDetails(code=0, message="")


def test_first_error_info_wins() -> None:
    first = error_details_pb2.ErrorInfo(reason="FIRST", domain="d")
    second = error_details_pb2.ErrorInfo(reason="SECOND", domain="d")
    decoded = decode_status(_status_bytes(first, second))
    assert decoded is not None
    assert decoded.reason == "FIRST"


def test_malformed_bytes_give_none() -> None:
    assert decode_status(b"\xff\xff\xff") is None
    valid = _status_bytes(error_details_pb2.ErrorInfo(reason="X"))
    assert decode_status(valid[:-3]) is None  # truncated inside a detail


def test_malformed_detail_gives_none() -> None:
    broken = any_pb2.Any(type_url="type.googleapis.com/google.rpc.ErrorInfo", value=b"\x0a\x05ab")
    status = status_pb2.Status(code=3, message="m", details=[broken])
    assert decode_status(status.SerializeToString()) is None


def test_details_from_trailers_finds_the_key() -> None:
    data = _status_bytes(error_details_pb2.ErrorInfo(reason="R", domain="hybridcache.dev"))
    trailers = (("x-other", "1"), (STATUS_DETAILS_KEY, data))
    decoded = details_from_trailers(trailers)
    assert decoded is not None
    assert decoded.reason == "R"
    assert details_from_trailers((("x-other", "1"),)) is None
    assert details_from_trailers(None) is None
