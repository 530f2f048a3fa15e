"""`hybridcache dev`: Redis, the development Wrapper and the server, together, on one machine.

Starts a private redis-server (PATH, else the pip-shipped one), the development Wrapper
(FastAPI over SQLite, seeded with demo tenants, publishing change notifications on that
Redis), and `hybridcache serve` in insecure development mode; prints grpcurl commands to
try; stops all three on Ctrl-C, SIGTERM or SIGHUP (the terminal closed), or when the server
exits. The children also die when the dev stack is killed outright (lifeline.py), and a start
that finds leftovers of an earlier run refuses in one line (devstack_leftovers.py).

Fixed default ports (gRPC 50051, Wrapper 8080, Redis 6380; the README's commands use them),
each changed by its flag (`--port`, `--wrapper-port`, `--redis-port`; 0: a free one).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

from hybridcache.server.ops.readiness import wait_serving
from hybridcache_dev.stack.devstack_leftovers import (
    DB_FILE,
    LeftoverError,
    Port,
    check_before_start,
    remove_database,
    remove_state,
    take_lock,
    write_pids,
)
from hybridcache_dev.stack.lifeline import die_with_parent
from hybridcache_dev.stack.redis_process import RedisProcess, free_port
from hybridcache_dev.wrapper import launch

DEV_WRAPPER_TOKEN = "dev-wrapper-token"  # noqa: S105 - the development Wrapper's published demo token
STATE_DIR = Path(".devstack")


def _grpcurl() -> str:
    beside_python = Path(sys.executable).parent / "grpcurl"
    return str(beside_python) if beside_python.exists() else (shutil.which("grpcurl") or "grpcurl")


def banner(grpc_port: int, wrapper_url: str, redis_url: str) -> str:
    g = f"{_grpcurl()} -plaintext"
    target = f"127.0.0.1:{grpc_port}"
    svc = "hybridcache.v1.HybridCache"
    admin = f"curl -s -H 'Authorization: Bearer {DEV_WRAPPER_TOKEN}'"
    return f"""
hybridcache dev stack is up (insecure development mode: no caller credentials needed)
  gRPC server        {target}
  development Wrapper {wrapper_url}   (token: {DEV_WRAPPER_TOKEN})
  Redis              {redis_url}

Try:
  {g} {target} list
  {g} {target} describe {svc}
  {g} -d '{{"tenant_id":"acme","operation_code":"crm.leads.create"}}' {target} {svc}/GetCreditCost
  {g} -d '{{"tenant_id":"globex","operation_code":"crm.leads.create"}}' {target} {svc}/GetCreditCost
  {g} -d '{{"tenant_id":"acme","user_id":"user-1","permission":"crm.leads.create"}}' \\
      {target} {svc}/CheckPermission
  {g} -d '{{"tenant_id":"acme","user_id":"user-1"}}' {target} {svc}/GetUserProfile
  {g} -d '{{"tenant_id":"acme","org_unit_id":"org-sales"}}' {target} {svc}/GetOrgUnit
  {g} -d '{{"tenant_ids":["acme"]}}' {target} {svc}/WatchChanges        # leave running, then:
  {admin} -X PUT -H 'Content-Type: application/json' -d '{{"cost":"4.25"}}' \\
      {wrapper_url}/admin/tenants/acme/credit-costs/crm.leads.create

Ctrl-C stops everything.
"""


def command(argv: list[str]) -> int:
    """`hybridcache dev [options]` (the service CLI hands the options over; entry point)."""
    parser = argparse.ArgumentParser(prog="hybridcache dev", description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--port", type=int, default=50051, help="gRPC port (default %(default)s; 0: a free one)"
    )
    parser.add_argument(
        "--wrapper-port",
        type=int,
        default=8080,
        help="development Wrapper port (default %(default)s; 0: a free one)",
    )
    parser.add_argument(
        "--redis-port", type=int, default=6380, help="Redis port (default %(default)s; 0: a free one)"
    )
    parser.add_argument("--publish-mode", choices=["pubsub", "stream", "both"], default="both")
    args = parser.parse_args(argv)
    return run_dev_stack(
        grpc_port=args.port,
        wrapper_port=args.wrapper_port,
        redis_port=args.redis_port,
        publish_mode=args.publish_mode,
    )


def run_dev_stack(*, grpc_port: int, wrapper_port: int, redis_port: int, publish_mode: str) -> int:
    """Run the dev stack until a signal (or the server's exit); 2 when leftovers are in the way."""
    stop = threading.Event()
    _on_signals(stop)
    try:
        lock = take_lock(STATE_DIR)
    except LeftoverError as exc:
        return _refuse(exc)
    with lock:
        try:
            note = check_before_start(
                STATE_DIR,
                [
                    Port("gRPC server", grpc_port, "--port"),
                    Port("development Wrapper", wrapper_port, "--wrapper-port"),
                    Port("Redis", redis_port, "--redis-port"),
                ],
            )
        except LeftoverError as exc:
            return _refuse(exc)
        if note:
            print(f"hybridcache dev: {note}", file=sys.stderr, flush=True)
        remove_database(STATE_DIR)  # fresh demo data on every start
        pids = {"dev stack": os.getpid()}
        try:
            code = _run(
                stop,
                pids,
                grpc_port=grpc_port,
                wrapper_port=wrapper_port,
                redis_port=redis_port,
                publish_mode=publish_mode,
            )
        except RuntimeError as exc:
            if not stop.is_set():  # a child that would not start: its reason, not a traceback
                return _refuse(exc)
            code = 0  # stopped by a signal while still starting
        finally:
            remove_state(STATE_DIR)
    _say("hybridcache dev stack stopped")
    return code


def _run(
    stop: threading.Event,
    pids: dict[str, int],
    *,
    grpc_port: int,
    wrapper_port: int,
    redis_port: int,
    publish_mode: str,
) -> int:
    # Every child is started from this (the main) thread and dies with it (lifeline.py),
    # so a SIGKILLed dev stack leaves nothing running; signals we can catch stop them in
    # order: server, then Wrapper, then Redis.
    with RedisProcess(redis_port, die_with_parent=True) as redis_proc:
        pids["redis-server"] = _pid(redis_proc.pid)
        write_pids(STATE_DIR, pids)
        wrapper = launch(
            redis_proc.url,
            token=DEV_WRAPPER_TOKEN,
            db_path=str(STATE_DIR / DB_FILE),
            publish_mode=publish_mode,
            app="crm",
            port=wrapper_port,
            die_with_parent=True,
        )
        try:
            pids["development Wrapper"] = wrapper.pid
            write_pids(STATE_DIR, pids)
            port = grpc_port or free_port()
            server = subprocess.Popen(
                [sys.executable, "-m", "hybridcache.server.cli", "serve"],
                env=_serve_env(port, wrapper.url, redis_proc.url),
                start_new_session=True,  # Ctrl-C reaches us; we stop the server first
                preexec_fn=die_with_parent(),  # noqa: PLW1509 - only prctl, see lifeline.py
            )
            try:
                pids["server"] = server.pid
                write_pids(STATE_DIR, pids)
                wait_serving(
                    f"127.0.0.1:{port}", timeout=60, alive=lambda: server.poll() is None and not stop.is_set()
                )
                _say(banner(port, wrapper.url, redis_proc.url))
                while not stop.wait(0.5):
                    if server.poll() is not None:
                        print(f"hybridcache: the server exited with {server.returncode}", file=sys.stderr)
                        return 1
            finally:
                _stop(server)
        finally:
            wrapper.stop()
    return 0


def _pid(pid: int | None) -> int:
    assert pid is not None, "a started process has a pid"
    return pid


def _refuse(reason: Exception) -> int:
    print(f"hybridcache dev: {reason}", file=sys.stderr, flush=True)
    return 2


def _say(text: str) -> None:
    # After SIGHUP (terminal closed) stdout may be gone: stopping matters more than saying so.
    with contextlib.suppress(OSError):
        print(text, flush=True)


def _serve_env(grpc_port: int, wrapper_url: str, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "HYBRIDCACHE_HOST": "127.0.0.1",
            "HYBRIDCACHE_PORT": str(grpc_port),
            "HYBRIDCACHE_WRAPPER_URL": wrapper_url,
            "HYBRIDCACHE_WRAPPER_TOKEN": DEV_WRAPPER_TOKEN,
            "HYBRIDCACHE_REDIS_URL": redis_url,
            "HYBRIDCACHE_TENANTS": "acme,globex,initech",
            "HYBRIDCACHE_INSECURE_DEV_MODE": "true",
        }
    )
    return env


def _stop(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _on_signals(stop: threading.Event) -> None:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal closed
        signal.signal(signum, handler)
