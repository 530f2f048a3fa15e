"""Decode the `grpc-status-details-bin` trailer without googleapis-common-protos.

The server attaches a `google.rpc.Status` whose details carry a `google.rpc.ErrorInfo`
(reason, domain, metadata) and sometimes a `google.rpc.RetryInfo`. The client wheel may
depend on grpcio and protobuf only, so the few fields we read are declared here.

Why a runtime descriptor and not a hand-written varint parser: both are about the same
size, but with a descriptor the wire format (varints, packed fields, unknown fields,
truncated or malformed input, UTF-8 checks) is handled by protobuf's own parser, and the
schema below reads like the .proto it mirrors. The messages live in a *private*
DescriptorPool under a private package name: field numbers and wire types are all that
matter on the wire, and a private pool cannot clash with `google.rpc.*` when
googleapis-common-protos is also imported into the same process (as in the server).
`Any` and `Duration` are redeclared too (instead of importing any_pb2 / duration_pb2) so
the pool needs no dependencies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

STATUS_DETAILS_KEY = "grpc-status-details-bin"
_ERROR_INFO_TYPE = "google.rpc.ErrorInfo"
_RETRY_INFO_TYPE = "google.rpc.RetryInfo"

_PACKAGE = "hybridcache.client.wire"
_F = descriptor_pb2.FieldDescriptorProto
# (field name, number, type, repeated, message type name or "")
_FieldSpec = tuple[str, int, "descriptor_pb2.FieldDescriptorProto.Type.ValueType", bool, str]

# Wire-compatible mirrors of:
#   google.rpc.Status      {int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3;}
#   google.protobuf.Any    {string type_url = 1; bytes value = 2;}
#   google.rpc.ErrorInfo   {string reason = 1; string domain = 2; map<string, string> metadata = 3;}
#   google.rpc.RetryInfo   {google.protobuf.Duration retry_delay = 1;}
#   google.protobuf.Duration {int64 seconds = 1; int32 nanos = 2;}
# A map field is on the wire a repeated {key = 1, value = 2} message, declared as such.
_SCHEMA: dict[str, Sequence[_FieldSpec]] = {
    "Status": (
        ("code", 1, _F.TYPE_INT32, False, ""),
        ("message", 2, _F.TYPE_STRING, False, ""),
        ("details", 3, _F.TYPE_MESSAGE, True, "Any"),
    ),
    "Any": (
        ("type_url", 1, _F.TYPE_STRING, False, ""),
        ("value", 2, _F.TYPE_BYTES, False, ""),
    ),
    "ErrorInfo": (
        ("reason", 1, _F.TYPE_STRING, False, ""),
        ("domain", 2, _F.TYPE_STRING, False, ""),
        ("metadata", 3, _F.TYPE_MESSAGE, True, "StringPair"),
    ),
    "StringPair": (
        ("key", 1, _F.TYPE_STRING, False, ""),
        ("value", 2, _F.TYPE_STRING, False, ""),
    ),
    "RetryInfo": (("retry_delay", 1, _F.TYPE_MESSAGE, False, "Duration"),),
    "Duration": (
        ("seconds", 1, _F.TYPE_INT64, False, ""),
        ("nanos", 2, _F.TYPE_INT32, False, ""),
    ),
}


def _build_classes() -> dict[str, type[Message]]:
    proto = descriptor_pb2.FileDescriptorProto(
        name="hybridcache/client/_status_details.proto", package=_PACKAGE, syntax="proto3"
    )
    for message_name, fields in _SCHEMA.items():
        message = proto.message_type.add(name=message_name)
        for name, number, kind, repeated, type_name in fields:
            spec = message.field.add(
                name=name,
                number=number,
                type=kind,
                label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
            )
            if type_name:  # set only for message fields: even "" counts as set
                spec.type_name = f".{_PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in _SCHEMA
    }


_CLASSES = _build_classes()


# Typed views of the runtime-built classes, so the code below is checked by mypy.
class _Any(Protocol):
    type_url: str
    value: bytes


class _Status(Protocol):
    code: int
    message: str
    details: Sequence[_Any]


class _StringPair(Protocol):
    key: str
    value: str


class _ErrorInfo(Protocol):
    reason: str
    domain: str
    metadata: Sequence[_StringPair]


class _Duration(Protocol):
    seconds: int
    nanos: int


class _RetryInfo(Protocol):
    retry_delay: _Duration

    def HasField(self, field_name: str) -> bool: ...  # noqa: N802 - protobuf's name


@dataclass(frozen=True, slots=True)
class StatusDetails:
    """The parts of a google.rpc.Status the client exposes."""

    code: int
    message: str
    reason: str = ""
    domain: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    retry_delay: float | None = None
    """Seconds the server asked the caller to wait (google.rpc.RetryInfo), if it said."""


def decode_status(data: bytes) -> StatusDetails | None:
    """Decode a serialized google.rpc.Status; None when the bytes are not one."""
    try:
        status = cast(_Status, _CLASSES["Status"].FromString(data))
        reason = domain = ""
        metadata: dict[str, str] = {}
        retry_delay: float | None = None
        for detail in status.details:
            # type_url is "type.googleapis.com/google.rpc.ErrorInfo"; only the name after
            # the last "/" identifies the type.
            type_name = detail.type_url.rpartition("/")[2]
            if type_name == _ERROR_INFO_TYPE and not reason:
                info = cast(_ErrorInfo, _CLASSES["ErrorInfo"].FromString(detail.value))
                reason, domain = info.reason, info.domain
                # Later entries win, as a protobuf map parser would have it.
                metadata = {pair.key: pair.value for pair in info.metadata}
            elif type_name == _RETRY_INFO_TYPE and retry_delay is None:
                retry = cast(_RetryInfo, _CLASSES["RetryInfo"].FromString(detail.value))
                if retry.HasField("retry_delay"):
                    delay = retry.retry_delay
                    retry_delay = max(0.0, delay.seconds + delay.nanos / 1e9)
    except DecodeError:
        return None
    return StatusDetails(status.code, status.message, reason, domain, metadata, retry_delay)


def details_from_trailers(trailers: Iterable[tuple[str, str | bytes]] | None) -> StatusDetails | None:
    """Find and decode the status-details trailer among a call's trailing metadata."""
    for key, value in trailers or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return decode_status(value)
    return None
