"""The cache's Redis connections are shared by its per-context instances
(monitor_project/redis_pool.py): a request must not open a connection of its own."""

import asyncio
import contextvars

from django.core.cache import cache, caches


def _fresh_cache_pool():
    """The pool of a cache instance built in a new context, as each request gets."""

    def build():
        backend = caches.create_connection("default")
        backend.set("redis-pool-check", 1)
        return backend._cache._get_connection_pool(True)

    return contextvars.Context().run(build)


def test_cache_instances_of_different_contexts_share_one_pool():
    assert _fresh_cache_pool() is _fresh_cache_pool()


def test_many_requests_worth_of_cache_instances_reuse_one_connection():
    pool = _fresh_cache_pool()
    before = len(pool._available_connections) + len(pool._in_use_connections)

    for _ in range(20):
        _fresh_cache_pool()

    assert len(pool._available_connections) + len(pool._in_use_connections) == before


async def test_concurrent_users_of_the_pool_get_working_connections():
    async def count():
        return await asyncio.to_thread(cache.incr, "redis-pool-counter")

    cache.set("redis-pool-counter", 0)
    await asyncio.gather(*(count() for _ in range(16)))

    assert cache.get("redis-pool-counter") == 16
