"""Wait for a gRPC server to report SERVING on the standard health service."""

from __future__ import annotations

import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def wait_serving(target: str, *, timeout: float = 20.0, service: str = "", alive: object = None) -> None:
    """Poll `grpc.health.v1.Health/Check` until SERVING; raise TimeoutError after `timeout` s.

    `alive`, when given, is a callable returning False once the server's process has died,
    so a crash is reported at once instead of after the timeout.
    """
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if callable(alive) and not alive():
                raise RuntimeError(f"the server at {target} exited before it was SERVING")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target} was not SERVING within {timeout} s")
            time.sleep(0.02)  # polling the health condition, with a deadline
