"""`hybridcache wrapper-check --events`: the seed's notifications are accepted by the
service's own decoder, malformed ones are counted by reason with their first example."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import redis

from hybridcache.server.cli import main
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from hybridcache_dev.stack.redis_process import RedisProcess
from tests.conftest import WRAPPER_TOKEN
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(60)

# The design note's own example message, as it is written there.
SEED_MESSAGE = {
    "eventId": "change-123",
    "eventType": "credit-config-changed",
    "tenantId": "acme",
    "data": {
        "configId": "cfg-789",
        "operationCode": "crm.leads.create",
        "changedFields": ["credit_cost"],
        "newValue": 3.0,
        "oldValue": 2.5,
    },
}


def test_events_counts_accepted_and_rejected_notifications(
    capsys: pytest.CaptureFixture[str], dev_wrapper: Any, redis_server: RedisProcess, tmp_path: Any
) -> None:
    token = tmp_path / "token"
    token.write_text(WRAPPER_TOKEN, encoding="utf-8")
    argv = ["wrapper-check", "--url", dev_wrapper.url, "--token-file", str(token), "--tenant", "acme"]
    argv += ["--key", "user-profiles=user-12", "--key", "org-units=org-sales"]
    argv += ["--events", "4", "--redis-url", redis_server.url, "--app", "crm"]
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(main(argv)))
    publisher = redis.Redis.from_url(redis_server.url)
    admin = WrapperAdmin(dev_wrapper.url, WRAPPER_TOKEN)
    try:
        patterns_before = int(publisher.execute_command("PUBSUB", "NUMPAT"))
        runner.start()
        wait_for(
            lambda: int(publisher.execute_command("PUBSUB", "NUMPAT")) > patterns_before,
            timeout=30,
            what="wrapper-check to subscribe",
        )
        admin.put_cost("acme", "crm.leads.create", "3.5")  # the development Wrapper's own notification
        publisher.publish("crm:acme:credit-config-changed", json.dumps(SEED_MESSAGE))
        publisher.publish("crm:acme:credit-config-changed", b"{not json")
        publisher.publish(
            "crm:acme:credit-config-changed", json.dumps({**SEED_MESSAGE, "tenantId": "globex"})
        )
        publisher.publish(
            "crm:acme:made-up-event", json.dumps({**SEED_MESSAGE, "eventType": "made-up-event"})
        )
        runner.join(timeout=40)
    finally:
        admin.close()
        publisher.close()
    assert not runner.is_alive(), "wrapper-check --events did not end"
    out = capsys.readouterr().out
    assert codes == [1], out  # rejections fail the check
    lines = out.splitlines()

    def row(check: str) -> str:
        found = [line for line in lines if f"  {check}  " in line]
        assert len(found) == 1, f"no single row {check!r} in:\n{out}"
        return found[0]

    assert "2 accepted" in row("events credit-config-changed")
    assert "1 rejected (first on 'crm:acme:credit-config-changed')" in row("events malformed-json")
    assert "1 rejected" in row("events tenant-mismatch")
    assert "1 rejected (first on 'crm:acme:made-up-event')" in row("events unknown-event-type")
    assert "events malformed-json" in out.split("To fix:")[1]
