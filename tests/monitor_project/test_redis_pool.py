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


def test_many_requests_worth_of_cache_instances_open_no_new_connection():
    first = _fresh_cache_pool()
    opened_before = first._created_connections

    later = {id(pool): pool for pool in (_fresh_cache_pool() for _ in range(20))}
    opened = sum(
        pool._created_connections - (opened_before if pool is first else 0)
        for pool in later.values()
    )

    assert opened == 0, f"20 more cache instances opened {opened} connections"


async def test_concurrent_users_of_the_pool_get_working_connections():
    async def count():
        return await asyncio.to_thread(cache.incr, "redis-pool-counter")

    cache.set("redis-pool-counter", 0)
    await asyncio.gather(*(count() for _ in range(16)))

    assert cache.get("redis-pool-counter") == 16


def test_cache_instances_of_different_contexts_share_one_client():
    def client():
        return caches.create_connection("default")._cache.get_client(write=True)

    assert contextvars.Context().run(client) is contextvars.Context().run(client)
