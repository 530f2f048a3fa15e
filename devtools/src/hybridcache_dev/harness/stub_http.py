"""A real HTTP/1.1 server in this process, on a free port of 127.0.0.1, answering each request
with what a handler returns: for tests and benchmarks that need a Wrapper saying exactly
this (a recorded request target, a held answer, a pre-built body) over a real socket.

    with StubHTTP(lambda request: (200, b'{"items": []}')) as stub:
        WrapperClient(stub.url, "t").fetch_snapshot(...)

The handler gets the request as sent on the wire (`StubRequest.target` is the raw request
target, path and query, exactly as the client wrote it) and runs on one thread per
connection, so it may block (to hold requests in flight). Keep-alive is on, as the Wrapper's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class StubRequest:
    method: str
    target: str  # the raw request target: path and query as sent, nothing decoded
    headers: dict[str, str]  # names lower-cased

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


Answer = tuple[int, bytes]  # (status, JSON body)
Handler = Callable[[StubRequest], Answer]


class StubHTTP:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        stub = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like uvicorn

            def do_GET(self) -> None:
                request = StubRequest(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}
                )
                status, body = stub.handler(request)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: tests print what matters

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> StubHTTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
