"""A bare HTTP/2 client for attacks grpc's own client cannot make: header values that are
not valid UTF-8, bodies that are not protobuf, arbitrary frames (the `h2` package over a
real socket)."""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions


@dataclass
class Answer:
    """What the server sent on one stream: response headers, body and trailers."""

    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytes = b""
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    reset: int | None = None  # RST_STREAM error code
    ended: bool = False

    @property
    def grpc_status(self) -> int | None:
        raw = self.trailers.get(b"grpc-status", self.headers.get(b"grpc-status"))
        return int(raw) if raw is not None else None

    @property
    def grpc_message(self) -> str:
        raw = self.trailers.get(b"grpc-message", self.headers.get(b"grpc-message", b""))
        return raw.decode("latin-1")


def grpc_frame(message: bytes) -> bytes:
    """One length-prefixed gRPC message (uncompressed)."""
    return struct.pack(">?I", False, len(message)) + message


class RawH2:
    """One HTTP/2 connection to `host:port`, plaintext (h2c prior knowledge, as gRPC does)."""

    def __init__(self, host: str, port: int, *, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        # Header validation off on our side: the point is to send what a client should not.
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.authority = f"{host}:{port}".encode()
        self.answers: dict[int, Answer] = {}
        self.closed = False
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data: bytes) -> None:
        """Bytes straight onto the socket (hand-made frames)."""
        self.sock.sendall(data)

    def call(self, method: str, body: bytes, metadata: list[tuple[bytes, bytes]] = ()) -> int:  # type: ignore[assignment]
        """Start a unary gRPC call (HEADERS + DATA with END_STREAM); returns the stream id."""
        stream_id = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", method.encode()),
            (b":authority", self.authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            *metadata,
        ]
        self.conn.send_headers(stream_id, headers)
        self.conn.send_data(stream_id, grpc_frame(body), end_stream=True)
        self.answers[stream_id] = Answer()
        self._flush()
        return stream_id

    def wait(self, stream_id: int, timeout: float = 5.0, *, first_message: bool = False) -> Answer:
        """Read until `stream_id` ended (or was reset); raise TimeoutError after `timeout`.
        `first_message`: return as soon as a response message arrived (a server stream that
        started), and cancel the stream."""
        deadline = time.monotonic() + timeout
        answer = self.answers.setdefault(stream_id, Answer())
        while not (answer.ended or answer.reset is not None):
            if first_message and answer.data:
                self.conn.reset_stream(stream_id)
                self._flush()
                break
            if self.closed:
                raise ConnectionError("the server closed the connection")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"stream {stream_id} did not end within {timeout} s")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                self.closed = True
                continue
            self._receive(data)
        return answer

    def _receive(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.closed = True
            return
        for event in events:
            stream_id = getattr(event, "stream_id", None)
            answer = self.answers.setdefault(stream_id, Answer()) if stream_id else None
            if isinstance(event, h2.events.ResponseReceived) and answer is not None:
                answer.headers.update(dict(event.headers))
            elif isinstance(event, h2.events.TrailersReceived) and answer is not None:
                answer.trailers.update(dict(event.headers))
            elif isinstance(event, h2.events.DataReceived) and answer is not None:
                answer.data += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded) and answer is not None:
                answer.ended = True
            elif isinstance(event, h2.events.StreamReset) and answer is not None:
                answer.reset = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.closed = True
        self._flush()

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self._flush()
        except (OSError, h2.exceptions.ProtocolError):
            pass
        self.sock.close()

    def __enter__(self) -> RawH2:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
