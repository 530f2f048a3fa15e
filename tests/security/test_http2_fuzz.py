"""A short fuzz of raw HTTP/2 frames against a real secure `hybridcache serve`: well-formed
and malformed frames in random order (HEADERS with odd paths and header values, with and
without a token; DATA with random gRPC framing; RST_STREAM, WINDOW_UPDATE, PING, SETTINGS,
PRIORITY, GOAWAY, CONTINUATION; raw junk), each example on a fresh TCP connection. The
server must survive all of it, keep answering health and authenticated calls, and write no
token to its log."""

from __future__ import annotations

import contextlib
import socket
import struct

import grpc
import hpack
import pytest
from hyperframe import frame as h2frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridcache.server.registration import SERVICE_NAME
from tests.faults.stack import Stack
from tests.security.conftest import ACME_TOKEN, GLOBEX_TOKEN, TOKENS
from tests.security.probes import credit_cost_call, health_call

pytestmark = pytest.mark.timeout(180)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PATHS = [
    f"/{SERVICE_NAME}/GetCreditCost",
    f"/{SERVICE_NAME}/WatchChanges",
    f"/{SERVICE_NAME}/NoSuchMethod",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/",
    "",
    "/../../etc/passwd",
]
stream_ids = st.integers(1, 15)  # hyperframe refuses 0 on stream frames; the server sees odd and even ids
header_values = st.one_of(st.sampled_from(["application/grpc", "trailers", "POST"]), st.text(max_size=40))


@st.composite
def headers_frame(draw: st.DrawFn) -> bytes:
    headers = [
        (":method", draw(st.sampled_from(["POST", "GET", "PRI", ""]))),
        (":scheme", "http"),
        (":path", draw(st.sampled_from(PATHS))),
        (":authority", "127.0.0.1"),
        ("content-type", draw(header_values)),
        ("te", draw(header_values)),
    ]
    token = draw(st.sampled_from([None, ACME_TOKEN, "not-a-token", ""]))
    if token is not None:
        headers.append(("authorization", f"Bearer {token}"))
    headers.extend(
        draw(
            st.lists(
                st.tuples(st.sampled_from(["grpc-timeout", "x-a", "grpc-encoding"]), header_values),
                max_size=3,
            )
        )
    )
    frame = h2frame.HeadersFrame(draw(stream_ids))
    frame.data = hpack.Encoder().encode(headers)
    if draw(st.booleans()):  # without it the block is unfinished: the server waits for CONTINUATION
        frame.flags.add("END_HEADERS")
    if draw(st.booleans()):
        frame.flags.add("END_STREAM")
    return bytes(frame.serialize())


@st.composite
def data_frame(draw: st.DrawFn) -> bytes:
    body = draw(st.binary(max_size=64))
    declared = draw(st.one_of(st.just(len(body)), st.integers(0, 2**32 - 1)))
    frame = h2frame.DataFrame(draw(stream_ids))
    frame.data = (
        bytes([draw(st.integers(0, 2))]) + struct.pack(">I", declared) + body
    )  # gRPC's message prefix
    if draw(st.booleans()):
        frame.flags.add("END_STREAM")
    return bytes(frame.serialize())


@st.composite
def control_frame(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["rst", "window", "ping", "settings", "priority", "goaway", "continuation"]))
    sid = draw(stream_ids)
    frame: h2frame.Frame
    if kind == "rst":
        frame = h2frame.RstStreamFrame(sid, error_code=draw(st.integers(0, 15)))
    elif kind == "window":
        frame = h2frame.WindowUpdateFrame(
            draw(st.integers(0, 15)), window_increment=draw(st.integers(0, 2**31 - 1))
        )
    elif kind == "ping":
        frame = h2frame.PingFrame(0, opaque_data=draw(st.binary(min_size=8, max_size=8)))
    elif kind == "settings":
        values = draw(st.dictionaries(st.integers(1, 8), st.integers(0, 2**31 - 1), max_size=3))
        frame = h2frame.SettingsFrame(0, settings=values)
    elif kind == "priority":
        frame = h2frame.PriorityFrame(
            sid or 1, depends_on=draw(stream_ids), stream_weight=draw(st.integers(0, 255))
        )
    elif kind == "goaway":
        frame = h2frame.GoAwayFrame(0, last_stream_id=sid, error_code=draw(st.integers(0, 15)))
    else:
        frame = h2frame.ContinuationFrame(sid, data=draw(st.binary(max_size=32)))
    return bytes(frame.serialize())


frames = st.lists(
    st.one_of(headers_frame(), data_frame(), control_frame(), st.binary(min_size=1, max_size=48)), max_size=12
)


def send(port: int, payload: list[bytes], *, preface: bool) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.settimeout(0.1)
        with contextlib.suppress(OSError):
            if preface:
                sock.sendall(PREFACE + bytes(h2frame.SettingsFrame(0).serialize()))
            for chunk in payload:
                sock.sendall(chunk)
            with contextlib.suppress(TimeoutError):
                while sock.recv(65536):  # read what the server says until it pauses or closes
                    pass


def test_random_http2_frames_do_not_hurt_the_server(secure_stack: Stack) -> None:
    assert secure_stack.server is not None
    server = secure_stack.server

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(payload=frames, preface=st.booleans())
    def fuzz(payload: list[bytes], preface: bool) -> None:
        send(server.port, payload, preface=preface or bool(payload))
        assert server.running(), "the server exited on a fuzzed connection"

    fuzz()
    with grpc.insecure_channel(server.target) as channel:
        health_call(timeout=5)(channel)
        credit_cost_call(GLOBEX_TOKEN, "globex", timeout=5)(channel)
    log = server.log_path.read_text(errors="replace")
    for token in TOKENS:
        assert token not in log, "a token reached the server log"
