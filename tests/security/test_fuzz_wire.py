"""A short fuzz of what reaches the server before any of our code: raw HTTP/2 frames and
protobuf bodies, against a real `hybridcache serve` process (the canary server), a few
seconds each in the default run. No answer may be INTERNAL or UNKNOWN, the process must
keep answering, and nothing secret may reach its log.

Deterministic: a fixed seed, so a failure replays; the seed and the case are in the message.
"""

from __future__ import annotations

import random
import socket
import struct
import time

import grpc
import hpack
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from tests.integration.test_observability import CANARIES, CANARY_CALLER_TOKEN, LoggedServer
from tests.security.raw_h2 import RawH2

pytestmark = pytest.mark.timeout(120)

SEED = 20261203
BUDGET_S = 3.0  # per fuzz: short enough for the default run
GOOD = [(b"authorization", f"Bearer {CANARY_CALLER_TOKEN}".encode())]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
NOT_ALLOWED = {2: "UNKNOWN", 13: "INTERNAL"}

SAMPLES: dict[str, bytes] = {
    "GetCreditCost": pb.GetCreditCostRequest(
        tenant_id="acme", operation_code="crm.leads.create"
    ).SerializeToString(),
    "BatchGetCreditCosts": pb.BatchGetCreditCostsRequest(
        tenant_id="acme", operation_codes=["crm.leads.create", "x"]
    ).SerializeToString(),
    "CheckPermission": pb.CheckPermissionRequest(
        tenant_id="acme", user_id="user-1", permission="crm.leads.create"
    ).SerializeToString(),
    "GetUserStatus": pb.GetUserStatusRequest(tenant_id="acme", user_id="user-1").SerializeToString(),
    "GetFeatureFlag": pb.GetFeatureFlagRequest(tenant_id="acme", flag_key="crm.beta").SerializeToString(),
    "GetUserProfile": pb.GetUserProfileRequest(tenant_id="acme", user_id="user-1").SerializeToString(),
    "GetOrgUnit": pb.GetOrgUnitRequest(tenant_id="acme", org_unit_id="org-sales").SerializeToString(),
    "GetCacheStats": b"",
    "WatchChanges": pb.WatchChangesRequest(tenant_ids=["acme"], resume_token="x").SerializeToString(),
}


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.4 and out:
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif choice < 0.6:
            out.insert(rng.randint(0, len(out)), rng.randrange(256))
        elif choice < 0.8 and out:
            del out[rng.randrange(len(out)) :]
        else:
            out += rng.randbytes(rng.randint(1, 16))
    return bytes(out)


def _host_port(target: str) -> tuple[str, int]:
    host, port = target.rsplit(":", 1)
    return host, int(port)


def _still_answers(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reply = pb_grpc.HybridCacheStub(channel).GetCreditCost(
            pb.GetCreditCostRequest(tenant_id="acme", operation_code="crm.leads.create"),
            metadata=tuple((k.decode(), v.decode()) for k, v in GOOD),
            timeout=5,
        )
        assert reply.credit_cost.cost.value


def _clean_log(server: LoggedServer, since: int) -> None:
    logs = server.log_path.read_bytes()[since:].decode("utf-8", "replace")
    found = [canary for canary in CANARIES if canary in logs]
    assert not found, f"log contains {found}:\n{logs[-3000:]}"
    assert "Traceback" not in logs, f"a traceback was logged:\n{logs[-3000:]}"


def test_fuzzed_protobuf_bodies_never_get_internal(logged_server: LoggedServer) -> None:
    rng = random.Random(SEED)
    since = len(logged_server.log_path.read_bytes())
    cases = 0
    deadline = time.monotonic() + BUDGET_S
    with RawH2(*_host_port(logged_server.target)) as h2c:
        while time.monotonic() < deadline:
            method, sample = rng.choice(list(SAMPLES.items()))
            body = _mutate(rng, sample) if rng.random() < 0.8 else rng.randbytes(rng.randint(0, 64))
            stream = method == "WatchChanges"
            answer = h2c.wait(
                h2c.call(f"/hybridcache.v1.HybridCache/{method}", body, GOOD), first_message=stream
            )
            assert answer.grpc_status not in NOT_ALLOWED, (
                f"seed {SEED} case {cases}: {method} {body!r} -> {answer.grpc_status} {answer.grpc_message}"
            )
            cases += 1
    assert cases >= 50, f"only {cases} cases in {BUDGET_S} s"
    _still_answers(logged_server.target)
    _clean_log(logged_server, since)


def _frame(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((frame_type, flags))
        + struct.pack(">I", stream_id)
        + payload
    )


def _random_frames(rng: random.Random, encoder: hpack.Encoder) -> bytes:
    frames = [_frame(0x4, 0, 0, b"")]  # an empty SETTINGS, as every client starts
    for _ in range(rng.randint(1, 6)):
        stream_id = rng.choice([0, 1, 3, 5, rng.randrange(2**31)])
        kind = rng.random()
        if kind < 0.35:  # HEADERS with odd values (not UTF-8, the canary token, odd paths)
            headers = [
                (b":method", rng.choice([b"POST", b"GET", b"\xff"])),
                (b":scheme", b"http"),
                (
                    b":path",
                    rng.choice([b"/hybridcache.v1.HybridCache/GetCreditCost", b"/", rng.randbytes(8)]),
                ),
                (b":authority", b"x"),
                (b"content-type", rng.choice([b"application/grpc", b"text/plain"])),
                (
                    b"authorization",
                    b"Bearer " + CANARY_CALLER_TOKEN.encode() + rng.choice([b"", b"\xff", b"\x00"]),
                ),
            ]
            flags = rng.choice([0x4, 0x5, 0x0, 0xFF])
            frames.append(_frame(0x1, flags, stream_id, encoder.encode(headers)))
        elif kind < 0.55:  # DATA, possibly a gRPC frame of garbage
            payload = struct.pack(">?I", False, rng.randint(0, 2**32 - 1)) + rng.randbytes(rng.randint(0, 32))
            frames.append(_frame(0x0, rng.choice([0, 1, 8, 9]), stream_id, payload))
        else:  # any frame type, flags and payload, lengths that lie included
            payload = rng.randbytes(rng.randint(0, 40))
            frame = _frame(rng.randrange(12), rng.randrange(256), stream_id, payload)
            if rng.random() < 0.2:
                frame = struct.pack(">I", rng.randrange(2**24))[1:] + frame[3:]
            frames.append(frame)
    return PREFACE + b"".join(frames)


def test_fuzzed_http2_frames_leave_the_server_answering(logged_server: LoggedServer) -> None:
    rng = random.Random(SEED)
    since = len(logged_server.log_path.read_bytes())
    host, port = _host_port(logged_server.target)
    cases = 0
    deadline = time.monotonic() + BUDGET_S
    while time.monotonic() < deadline:
        data = _random_frames(rng, hpack.Encoder())
        with socket.create_connection((host, port), timeout=2) as sock:
            try:
                sock.sendall(data)
                sock.settimeout(0.05)
                while sock.recv(65536):  # read what it answers until it closes or goes quiet
                    pass
            except (TimeoutError, ConnectionError):
                pass
        cases += 1
        if cases % 25 == 0:
            _still_answers(logged_server.target)
    assert cases >= 50, f"only {cases} connections in {BUDGET_S} s"
    _still_answers(logged_server.target)
    _clean_log(logged_server, since)
