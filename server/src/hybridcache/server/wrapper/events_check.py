"""`hybridcache wrapper-check --events N`: listen to the Wrapper's change notifications.

It subscribes to `{app}:*` on the Wrapper's Redis for N seconds (wider than the service's
own patterns, so that an unknown event type is seen and counted rather than missed) and
runs each message through the service's own decoder (`events/decode.py`): what it rejects
here, the service would drop. Rows: accepted counts by event type, rejections by reason
with the first example's channel and the decoder's detail (which names a field, never a
value: notifications may carry profile fields).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import redis

from hybridcache.server.events.decode import DecoderConfig, Event, decode

FAIL, WARN, OK = "FAIL", "WARN", "ok"


def listen(redis_url: str, apps: list[str], seconds: float) -> list[tuple[str, str, str]]:
    """(check, status, detail) rows for the notifications seen within `seconds`."""
    config = DecoderConfig(apps=frozenset(apps))
    accepted: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    first: dict[str, str] = {}
    client: Any = redis.Redis.from_url(redis_url, socket_timeout=5)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.psubscribe(*(f"{app}:*" for app in apps))
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = pubsub.get_message(timeout=min(left, 0.5))
            if message is None or message.get("type") != "pmessage":
                continue
            channel = message["channel"]
            result = decode(channel, message["data"], config=config, now_ms=int(time.time() * 1000))
            if isinstance(result, Event):
                accepted[result.event_type] += 1
            else:
                rejected[result.reason] += 1
                name = channel.decode(errors="replace") if isinstance(channel, bytes) else str(channel)
                first.setdefault(
                    result.reason, f"first on {name!r}" + (f": {result.detail}" if result.detail else "")
                )
    finally:
        pubsub.close()
        client.close()
    rows = [
        ("events " + event_type, OK, f"{count} accepted") for event_type, count in sorted(accepted.items())
    ]
    rows += [
        ("events " + reason, FAIL, f"{count} rejected ({first[reason]}): the service drops these")
        for reason, count in sorted(rejected.items())
    ]
    if not rows:
        channels = ", ".join(f"{app}:{{tenantId}}:{{eventType}}" for app in apps)
        rows.append(
            ("events", WARN, f"no notification in {seconds:g} s on {channels}: is the Wrapper publishing?")
        )
    return rows
