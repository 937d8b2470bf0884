"""One Redis connection pool per process and server, shared by every cache instance.

Django keeps its cache backends in a context-local store, and each request on the HTTP
thread pool runs in a fresh context: every request built a new ``RedisCache``, with a new
connection pool, and so opened a new TCP connection to Redis for the rate limit (and for
every other cache read). On the publish path that connect was the larger part of the
rate limit's ~1 ms (docs/latency.md). With this class as the cache's ``pool_class`` the
backends stay per context, as Django wants, but their connections come from one pool.
redis-py pools are thread-safe and reset themselves in a forked child.

``ProcessRedisCache`` (the cache's ``BACKEND``) also keeps one redis-py client per pool:
Django's client class builds a new ``redis.Redis`` on every cache call (~60 µs in a
request's fresh context, measured on the rate limit of every ingest request). A client
holds no connection of its own and is thread-safe, so one per pool serves every call.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from django.core.cache.backends.redis import RedisCache, RedisCacheClient

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


_clients: dict[int, tuple[redis.ConnectionPool, redis.Redis]] = {}


class SharedClientRedisCacheClient(RedisCacheClient):
    def get_client(self, key: Any = None, *, write: bool = False) -> redis.Redis:
        pool = self._get_connection_pool(write)
        known = _clients.get(id(pool))
        if known is None or known[0] is not pool:
            with _lock:
                known = (pool, self._client(connection_pool=pool))
                _clients[id(pool)] = known
        return known[1]


class ProcessRedisCache(RedisCache):
    """Django's Redis cache whose calls share one client per connection pool."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = SharedClientRedisCacheClient
