"""The README's two commands from nothing (`make fresh-test`; minutes, the network to PyPI):
a clean `git clone` of this checkout's HEAD, with `redis-server` and `npm` hidden from PATH,
runs `scripts/bootstrap`, then `scripts/dev` serves and answers, and `scripts/test` passes
its checks (generated code, buf, hadolint, ruff, mypy, manifests) and a few tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import redis

from hybridcache.server.ops.readiness import wait_serving
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.stack.redis_process import BINARY_ENV, free_port

pytestmark = [pytest.mark.fresh, pytest.mark.timeout(1500)]
ROOT = Path(__file__).resolve().parents[2]
HIDDEN = {"redis-server", "redis-cli", "redis-sentinel", "npm", "npx"}


def path_without(hidden: set[str], directory: Path) -> str:
    """A PATH of one folder that links every command on PATH but the hidden ones."""
    directory.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(folder) or ".venv" in folder:
            continue
        for entry in os.scandir(folder):
            target = directory / entry.name
            if entry.name not in hidden and not target.exists() and os.access(entry.path, os.X_OK):
                target.symlink_to(entry.path)
    return str(directory)


def timed(what: str, argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    started = time.monotonic()
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}"
    print(f"\n[fresh-test] {what}: {time.monotonic() - started:.1f} s")
    return done.stdout


def test_the_two_commands_work_in_a_clean_clone_without_redis_server_or_npm(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k != BINARY_ENV and not k.startswith("HYBRIDCACHE_")}
    env["PATH"] = path_without(HIDDEN, tmp_path / "bin")
    env["PYTHON"] = os.path.realpath(sys.base_prefix + "/bin/python3")
    for name in HIDDEN:
        assert shutil.which(name, path=env["PATH"]) is None, f"{name} is still on the test's PATH"

    timed("scripts/bootstrap (clean clone)", ["scripts/bootstrap"], clone, env, timeout=900)
    # npm is hidden: nothing the set-up needs comes from it (tools/js-replica is the optional
    # Node cross-language check, installed by its own test only where npm exists).
    assert not list(clone.glob("tools/**/node_modules")), "bootstrap installed npm packages"
    assert (clone / ".venv/bin/buf").is_file()

    port, redis_port = free_port(), free_port()
    log_path = tmp_path / "dev.log"
    with log_path.open("wb") as log:
        dev = subprocess.Popen(
            ["scripts/dev", "--port", str(port), "--wrapper-port", "0", "--redis-port", str(redis_port)],
            cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_serving(f"127.0.0.1:{port}", timeout=120, alive=lambda: dev.poll() is None)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = pb_grpc.HybridCacheStub(channel).GetCreditCost(
                pb.GetCreditCostRequest(tenant_id="acme", operation_code="crm.leads.create"), timeout=10
            )
        assert reply.credit_cost.operation_code == "crm.leads.create"
        with redis.Redis(port=redis_port, socket_timeout=5, decode_responses=True) as client:
            assert client.info("server").get("server_name") == "valkey"
        dev.send_signal(signal.SIGINT)
        assert dev.wait(30) == 0, log_path.read_text()[-2000:]
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()

    # Every step of the test command; the suite itself only in part (the whole is `make test`).
    subset = [
        "tests/image/test_image_files.py",
        "tests/integration/test_valkey.py",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    output = timed("scripts/test (checks + a subset)", ["scripts/test", *subset], clone, env, timeout=900)
    assert "== buf lint" in output
    assert "== hadolint" in output
