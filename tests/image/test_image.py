"""The container image, built for real and its entrypoint run (`make image-test`; root, minutes).

No Docker engine or registry is needed: scripts/image-base makes a local Debian base with
debootstrap, podman builds the Dockerfile FROM it (`--isolation chroot`), and the image's
own Entrypoint / Cmd / Env / User / HEALTHCHECK, read from the image, run in its root
filesystem through `podman mount` + `chroot` (`podman run` needs cgroups this VM lacks). The
server inside serves from a real Redis and the development Wrapper on the host's loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.stack.redis_process import RedisProcess, free_port
from tests.conftest import WRAPPER_TOKEN
from tests.helpers import wait_for
from tests.image.test_image_files import image_tag

pytestmark = [pytest.mark.image, pytest.mark.timeout(1200)]
ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/hybridcache-base:bookworm"


def timed(what: str, argv: list[str], timeout: float) -> None:
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}"
    print(f"\n[image-test] {what}: {time.monotonic() - started:.1f} s")


@dataclass(frozen=True)
class Image:
    ref: str
    config: dict[str, Any]  # the image's Config: Env, Entrypoint, Cmd, User, ...
    healthcheck: list[str]  # ["CMD", ...]


@pytest.fixture(scope="module")
def image() -> Image:
    missing = [tool for tool in ("podman", "debootstrap", "chroot") if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        pytest.fail(
            f"make image-test needs root and {missing or 'podman'}: apt-get install -y podman debootstrap"
        )
    timed("local base (scripts/image-base)", ["scripts/image-base", BASE], timeout=900)
    ref = f"localhost/{image_tag()}"
    build = ["podman", "build", "--isolation", "chroot", "--format", "docker"]
    timed("podman build", [*build, "--build-arg", f"BASE_IMAGE={BASE}", "-t", ref, "."], timeout=900)
    inspected = json.loads(
        subprocess.run(
            ["podman", "image", "inspect", ref], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    )[0]
    return Image(ref, inspected["Config"], inspected["Healthcheck"]["Test"])


@dataclass(frozen=True)
class RootFS:
    path: Path
    image: Image

    def argv(self, command: list[str], env: dict[str, str] | None = None) -> list[str]:
        """`command` as the image runs it: its user, only its environment (plus `env`)."""
        uid = self.image.config.get("User", "0")
        gid = next(
            line.split(":")[3]
            for line in (self.path / "etc/passwd").read_text().splitlines()
            if line.split(":")[2] == uid
        )
        environment = [*self.image.config["Env"], *(f"{k}={v}" for k, v in (env or {}).items())]
        chroot = ["chroot", f"--userspec={uid}:{gid}", str(self.path)]
        return [*chroot, "/usr/bin/env", "-i", *environment, *command]


@pytest.fixture
def rootfs(image: Image) -> Iterator[RootFS]:
    container = subprocess.run(
        ["podman", "create", image.ref], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    try:
        mounted = subprocess.run(
            ["podman", "mount", container], capture_output=True, text=True, timeout=60, check=True
        ).stdout.strip()
        yield RootFS(Path(mounted), image)
    finally:
        subprocess.run(["podman", "umount", container], capture_output=True, timeout=60, check=False)
        subprocess.run(["podman", "rm", "-f", container], capture_output=True, timeout=60, check=False)


def test_the_entrypoint_reports_the_version(rootfs: RootFS) -> None:
    done = subprocess.run(
        rootfs.argv([*rootfs.image.config["Entrypoint"], "--version"]),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hybridcache 0.1.0"


def test_the_entrypoint_serves_and_its_healthcheck_says_serving(
    rootfs: RootFS, redis_server: RedisProcess, dev_wrapper: Any, tmp_path: Path
) -> None:
    config = rootfs.image.config
    port = free_port()
    env = {
        "HYBRIDCACHE_HOST": "127.0.0.1",  # the host's loopback: chroot shares its network
        "HYBRIDCACHE_PORT": str(port),
        "HYBRIDCACHE_WRAPPER_URL": dev_wrapper.url,
        "HYBRIDCACHE_WRAPPER_TOKEN": WRAPPER_TOKEN,
        "HYBRIDCACHE_REDIS_URL": redis_server.url,
        "HYBRIDCACHE_TENANTS": "acme",
        "HYBRIDCACHE_INSECURE_DEV_MODE": "true",
    }
    assert rootfs.image.healthcheck[0] == "CMD", rootfs.image.healthcheck
    health = rootfs.argv(rootfs.image.healthcheck[1:], env)
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        serve = rootfs.argv([*config["Entrypoint"], *config["Cmd"]], env)
        server = subprocess.Popen(serve, stdout=log, stderr=log)
    try:
        started = time.monotonic()

        def healthy() -> bool:
            assert server.poll() is None, f"serve exited {server.returncode}: {log_path.read_text()[-2000:]}"
            return subprocess.run(health, capture_output=True, timeout=30, check=False).returncode == 0

        wait_for(healthy, timeout=120, what="the image's HEALTHCHECK to pass", interval=0.5)
        print(f"\n[image-test] serve -> HEALTHCHECK passes: {time.monotonic() - started:.1f} s")
        reply = subprocess.run(health, capture_output=True, text=True, timeout=30, check=True).stdout
        assert "SERVING" in reply
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = pb_grpc.HybridCacheStub(channel).GetCreditCost(
                pb.GetCreditCostRequest(tenant_id="acme", operation_code="crm.leads.create"), timeout=10
            )
        assert answer.credit_cost.operation_code == "crm.leads.create"
        assert config["StopSignal"] == "SIGTERM"
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0, log_path.read_text()[-2000:]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert '"stopped"' in log_path.read_text(), "no JSON 'stopped' line: the image's LOG_FORMAT=json is lost"
