"""`hybridcache dev`: Redis, the development Wrapper and the server, together, on one machine.

Starts a private redis-server (PATH, else the pip-shipped one), the development Wrapper
(FastAPI over SQLite, seeded with demo tenants, publishing change notifications on that
Redis), and `hybridcache serve` in insecure development mode; prints grpcurl commands to
try; stops all three on Ctrl-C (or when the server exits).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

from hybridcache.server.devwrapper import launch
from hybridcache.server.readiness import wait_serving
from hybridcache.server.redis_process import RedisProcess, free_port

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


def run_dev_stack(*, grpc_port: int, wrapper_port: int, redis_port: int, publish_mode: str) -> int:
    stop = threading.Event()
    _on_signals(stop)
    STATE_DIR.mkdir(exist_ok=True)
    db_path = STATE_DIR / "wrapper.db"
    db_path.unlink(missing_ok=True)  # fresh demo data on every start
    with RedisProcess(redis_port) as redis_proc:
        wrapper = launch(
            redis_proc.url,
            token=DEV_WRAPPER_TOKEN,
            db_path=str(db_path),
            publish_mode=publish_mode,
            app="crm",
            port=wrapper_port,
        )
        try:
            port = grpc_port or free_port()
            server = subprocess.Popen(
                [sys.executable, "-m", "hybridcache.server.cli", "serve"],
                env=_serve_env(port, wrapper.url, redis_proc.url),
                start_new_session=True,  # Ctrl-C reaches us; we stop the server first
            )
            try:
                wait_serving(f"127.0.0.1:{port}", timeout=60, alive=lambda: server.poll() is None)
                print(banner(port, wrapper.url, redis_proc.url), flush=True)
                while not stop.wait(0.5):
                    if server.poll() is not None:
                        print(f"hybridcache: the server exited with {server.returncode}", file=sys.stderr)
                        return 1
            finally:
                _stop(server)
        finally:
            wrapper.stop()
    print("hybridcache dev stack stopped", flush=True)
    return 0


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

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
