"""The contract as a stranger meets it: grpcurl with no proto files, through reflection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from hybridcache.server.app import Service

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
SERVICE = "hybridcache.v1.HybridCache"
pytestmark = pytest.mark.timeout(60)


def grpcurl(service: Service, *args: str, flags: tuple[str, ...] = ()) -> str:
    """`grpcurl [flags] ADDRESS args...` (list / describe SYMBOL / METHOD)."""
    result = subprocess.run(
        [GRPCURL, "-plaintext", "-max-time", "10", *flags, f"127.0.0.1:{service.port}", *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, f"grpcurl {' '.join(args)} failed: {result.stderr}"
    return result.stdout


def call(service: Service, method: str, body: dict[str, Any]) -> Any:
    return json.loads(grpcurl(service, f"{SERVICE}/{method}", flags=("-d", json.dumps(body))))


def test_list_shows_the_service_health_and_reflection(service: Service) -> None:
    listed = grpcurl(service, "list").split()
    assert SERVICE in listed
    assert "grpc.health.v1.Health" in listed
    assert any(name.startswith("grpc.reflection.") for name in listed)


def test_describe_shows_every_rpc(service: Service) -> None:
    described = grpcurl(service, "describe", SERVICE)
    for rpc in [
        "GetCreditCost", "BatchGetCreditCosts", "CheckPermission", "GetUserStatus", "GetFeatureFlag",
        "GetUserProfile", "GetOrgUnit", "WatchChanges", "GetCacheStats",
    ]:  # fmt: skip
        assert f"rpc {rpc}" in described, f"{rpc} missing from:\n{described}"
    assert "stream .hybridcache.v1.WatchChangesResponse" in described


def test_each_read_rpc(service: Service) -> None:
    cost = call(service, "GetCreditCost", {"tenant_id": "acme", "operation_code": "crm.leads.create"})
    assert cost["credit_cost"]["operation_code"] == "crm.leads.create"
    assert cost["credit_cost"]["cost"]["value"]
    assert cost["provenance"]["source"] == "SOURCE_CACHE"

    batch = call(
        service, "BatchGetCreditCosts", {"tenant_id": "acme", "operation_codes": ["crm.leads.create", "nope"]}
    )
    assert batch["missing_operation_codes"] == ["nope"]

    decision = call(
        service, "CheckPermission", {"tenant_id": "acme", "user_id": "user-1", "permission": "crm.leads.read"}
    )
    assert decision["reason"].startswith("PERMISSION_REASON_")

    status = call(service, "GetUserStatus", {"tenant_id": "acme", "user_id": "user-1"})
    assert status["user_status"]["user_id"] == "user-1"

    flag = call(service, "GetFeatureFlag", {"tenant_id": "acme", "flag_key": "crm.ai-summaries"})
    assert flag["feature_flag"]["flag_key"] == "crm.ai-summaries"

    profile = call(service, "GetUserProfile", {"tenant_id": "acme", "user_id": "user-1"})
    assert profile["user_profile"]["user_id"] == "user-1"
    assert profile["provenance"]["source"] == "SOURCE_WRAPPER"

    unit = call(service, "GetOrgUnit", {"tenant_id": "acme", "org_unit_id": "org-sales"})
    assert unit["org_unit"]["org_unit_id"] == "org-sales"

    stats = call(service, "GetCacheStats", {})
    assert {k["kind"] for k in stats["kinds"]} >= {"KIND_CREDIT_COSTS", "KIND_USER_PROFILES"}


def test_health_check(service: Service) -> None:
    reply = json.loads(grpcurl(service, "grpc.health.v1.Health/Check"))
    assert reply["status"] == "SERVING"


def test_bad_input_via_grpcurl(service: Service) -> None:
    result = subprocess.run(
        [
            GRPCURL, "-plaintext", "-d", '{"tenant_id": "", "operation_code": "x"}',
            f"127.0.0.1:{service.port}", f"{SERVICE}/GetCreditCost",
        ],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "InvalidArgument" in result.stderr, result.stderr
    assert "tenant_id is required" in result.stderr, result.stderr


@pytest.mark.parametrize("package", ["grpc.reflection.v1", "grpc.reflection.v1alpha"])
def test_reflection_answers_under_v1_and_v1alpha(service: Service, package: str) -> None:
    """grpcurl 1.9+ and other current clients ask grpc.reflection.v1 first; older ones v1alpha.
    (The v1 and v1alpha messages are the same bytes on the wire, so one pair of classes serves.)"""
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        info = channel.stream_stream(
            f"/{package}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        asked = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="grpc.reflection.v1.ServerReflection"
            ),
        ]
        listed, described = list(info(iter(asked), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= names, names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    assert any(
        f.package == "grpc.reflection.v1" and f.service[0].name == "ServerReflection" for f in files
    ), described
