"""Publishing change notifications on Redis: pub/sub, a stream, or both.

A failed publish is reported (False), never raised: the Wrapper's write has already
committed, and the product must recover from a missed notification by resyncing. That is
exactly what the tests of the resync path exercise by stopping Redis.
"""

from __future__ import annotations

import logging
from enum import StrEnum

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from hybridcache.server.events.connection import SENTINEL_SCHEMES, parse_sentinel_url

log = logging.getLogger(__name__)

DEFAULT_STREAM_MAXLEN = 10_000


class PublishMode(StrEnum):
    PUBSUB = "pubsub"
    STREAM = "stream"
    BOTH = "both"


def stream_key(app: str) -> str:
    """`{crm}:changes`: the braces are a Redis Cluster hash tag (one slot per app)."""
    return "{" + app + "}:changes"


class Publisher:
    """Sends raw messages to Redis according to the publish mode."""

    def __init__(
        self,
        redis_url: str | None,
        *,
        app: str = "crm",
        mode: PublishMode = PublishMode.PUBSUB,
        stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
        timeout: float = 1.0,
    ) -> None:
        self.app = app
        self.mode = mode
        self.stream_maxlen = stream_maxlen
        self._redis: aioredis.Redis | None = None
        self._sentinels: tuple[aioredis.Redis, ...] = ()
        if redis_url is not None and redis_url.startswith(SENTINEL_SCHEMES):
            # Redis Sentinel: every new connection asks the sentinels for the current master,
            # so after a failover the next publish goes to the promoted replica.
            parsed = parse_sentinel_url(redis_url)
            sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
                list(parsed.hosts),
                sentinel_kwargs={"socket_connect_timeout": timeout, "socket_timeout": timeout},
            )
            self._sentinels = tuple(sentinel.sentinels)
            self._redis = sentinel.master_for(
                parsed.service_name,
                db=parsed.db,
                username=parsed.username,
                password=parsed.password,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
            )
        elif redis_url is not None:
            # No retries and short timeouts: with Redis down an admin write should answer
            # "published": false at once, not after redis-py's default backoff (10 tries).
            self._redis = aioredis.Redis.from_url(
                redis_url,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
            )

    @property
    def stream_key(self) -> str:
        return stream_key(self.app)

    async def publish(self, channel: str, message: str) -> bool:
        """Publish one message; True when Redis accepted it (subscribers or not)."""
        if self._redis is None:
            return False
        try:
            # One round trip for both commands; not MULTI: PUBLISH has no key, and in a
            # cluster a transaction would add nothing but a slot check.
            async with self._redis.pipeline(transaction=False) as pipe:
                if self.mode in (PublishMode.PUBSUB, PublishMode.BOTH):
                    pipe.publish(channel, message)
                if self.mode in (PublishMode.STREAM, PublishMode.BOTH):
                    pipe.xadd(
                        self.stream_key,
                        {"channel": channel, "message": message},
                        maxlen=self.stream_maxlen,
                        approximate=True,
                    )
                await pipe.execute()
        except (RedisError, OSError) as exc:
            # The channel names a tenant and an event type, never profile data.
            log.warning("publish to %s failed: %s", channel, type(exc).__name__)
            return False
        return True

    async def aclose(self) -> None:
        for each in (self._redis, *self._sentinels):
            if each is not None:
                await each.aclose()
