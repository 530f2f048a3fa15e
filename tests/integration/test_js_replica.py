"""The protocol is the product: a consumer replica built in Node.js from the proto files only
(`tools/js-replica/replica.js`: @grpc/grpc-js + @grpc/proto-loader, no generated code) with
ListSnapshot + WatchChanges from its token equals the Wrapper's truth after a burst of
changes — every item of the four kinds, with its version, and no reload.

Needs node and npm (skipped, saying so, when either is absent). The npm packages are
installed by `npm ci` from the committed package-lock.json into tools/js-replica/node_modules
(git-ignored), once, by the fixture below, not when the suite is imported.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hybridcache.server.app import Service
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from hybridcache_dev.stack.redis_process import RedisProcess
from tests.conftest import service_settings
from tests.helpers import wait_for
from tests.integration.test_list_snapshot import set_cost, wrapper_truth

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "tools" / "js-replica"
PROTOS = ROOT / "protos"
TENANT = "acme"


@pytest.fixture(scope="module")
def node_replica_installed() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the cross-language replica test (not on this machine)")
    installed = JS_DIR / "node_modules" / ".package-lock.json"
    lock = JS_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"npm ci failed in {JS_DIR}:\n{done.stdout}\n{done.stderr}"
    return Path(node)


class NodeReplica:
    """replica.js as a subprocess: its stdout's JSON lines land in a queue."""

    def __init__(self, node: Path, target: str) -> None:
        self.process = subprocess.Popen(
            [str(node), str(JS_DIR / "replica.js"), target, TENANT, str(PROTOS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def next(self, event: str, timeout: float) -> dict[str, Any]:
        while True:
            try:
                message = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"replica.js sent no {event!r} within {timeout} s") from None
            assert message["event"] != "error", f"replica.js failed: {message}"
            if message["event"] == event:
                return message

    def dump(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("dump\n")
        self.process.stdin.flush()
        return self.next("dump", timeout=10)

    def close(self) -> str:
        self.process.kill()
        _, err = self.process.communicate(timeout=10)
        return err


def as_rows(items: list[list[Any]]) -> set[tuple[Any, ...]]:
    def frozen(value: Any) -> Any:
        return tuple(frozen(v) for v in value) if isinstance(value, list) else value

    return {(kind, key, version, frozen(rest)) for kind, key, version, *rest in items}


def put_role(dev_wrapper: Any, role: str, permissions: list[str]) -> None:
    with WrapperAdmin(dev_wrapper.url, dev_wrapper.token) as admin:
        admin.put_role(TENANT, role, permissions)


@pytest.fixture
def replica(
    node_replica_installed: Path,
    start_service: Callable[..., Service],
    dev_wrapper: Any,
    redis_server: RedisProcess,
) -> Iterator[NodeReplica]:
    service = start_service(service_settings(dev_wrapper.url, redis_server.url, watch_heartbeat_s=0.5))
    node = NodeReplica(node_replica_installed, f"127.0.0.1:{service.port}")
    try:
        node.next("ready", timeout=30)
        yield node
    finally:
        stderr = node.close()
        if stderr.strip():
            print(f"replica.js stderr:\n{stderr}")


def test_a_node_replica_from_the_proto_equals_the_wrappers_truth(
    replica: NodeReplica, dev_wrapper: Any
) -> None:
    before = replica.dump()
    assert as_rows(before["items"]) == wrapper_truth(dev_wrapper, TENANT), (
        "the snapshot differs from the Wrapper"
    )
    codes = sorted({key for kind, key, *_ in before["items"] if kind == 1})[:5]
    for round_ in range(1, 11):  # a burst: 50 credit-cost and 5 role changes
        for i, code in enumerate(codes):
            set_cost(dev_wrapper, TENANT, code, f"{round_}.{i}5")
        if round_ % 2 == 0:
            put_role(dev_wrapper, "js-role", ["crm.leads.read", f"crm.r{round_}.*"])
    truth = wrapper_truth(dev_wrapper, TENANT)
    last: dict[str, Any] = {}

    def equal() -> bool:
        last.update(replica.dump())
        return as_rows(last["items"]) == truth

    try:
        wait_for(equal, timeout=15, what="the Node.js replica to equal the Wrapper", interval=0.1)
    except AssertionError:
        got = as_rows(last["items"])
        raise AssertionError(f"missing {sorted(truth - got)[:5]}, extra {sorted(got - truth)[:5]}") from None
    assert last["resyncs"] == 0, f"no reload expected: {last['resyncs']} resyncs"
    assert last["loads"] == 1, f"one snapshot load expected, got {last['loads']}"
    assert last["applied"] >= 55, f"the burst's changes arrived by the watch: applied {last['applied']}"
