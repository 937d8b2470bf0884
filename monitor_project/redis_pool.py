"""One Redis connection pool per process and server, shared by every cache instance.

Django keeps its cache backends in a context-local store, and each request on the HTTP
thread pool runs in a fresh context: every request built a new ``RedisCache``, with a new
connection pool, and so opened a new TCP connection to Redis for the rate limit (and for
every other cache read). On the publish path that connect was the larger part of the
rate limit's ~1 ms (docs/latency.md). With this class as the cache's ``pool_class`` the
backends stay per context, as Django wants, but their connections come from one pool.
redis-py pools are thread-safe and reset themselves in a forked child.
"""

from __future__ import annotations

import threading
from typing import Any

import redis

_lock = threading.Lock()
_pools: dict[tuple[str, tuple[tuple[str, Any], ...]], redis.ConnectionPool] = {}


class ProcessConnectionPool(redis.ConnectionPool):
    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> redis.ConnectionPool:
        key = (url, tuple(sorted((name, repr(value)) for name, value in kwargs.items())))
        with _lock:
            pool = _pools.get(key)
            if pool is None:
                pool = super().from_url(url, **kwargs)
                _pools[key] = pool
            return pool
