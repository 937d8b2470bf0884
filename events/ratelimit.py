"""Fixed one-minute rate windows counted in Redis through Django's cache.

The count is one Redis round trip (``INCR`` and ``EXPIRE`` pipelined on the cache's own
client): ``INCR`` is atomic and creates the key, so a limit holds across every daphne
process. (``cache.add`` then ``cache.incr`` cost two round trips on every ingest request.) The
window is the wall-clock minute: a caller may send up to ``limit`` requests in each one
(at most twice the limit across a window boundary, which is fine for abuse protection).

When Redis cannot be reached the request is let through: the limit protects the service,
and refusing every producer while Redis restarts would be the outage it protects against.
"""

import logging
import threading
import time

import redis
from django.core.cache import cache
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60


def rate_limit_wait(*, scope: str, key: str | int, limit: int) -> int | None:
    """Count one request of ``key`` in ``scope``; seconds to wait when over ``limit``.

    Returns None while the caller is within its budget for the current minute, else the
    whole seconds (at least 1) until the next window opens, for a ``Retry-After`` header.
    """
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    cache_key = f"ratelimit:{scope}:{key}:{window}"
    try:
        count = _count(cache_key)
    except RedisError as exc:
        logger.warning("rate limit %s not counted (Redis unavailable): %s", scope, exc)
        return None
    if count > limit:
        return max(1, int((window + 1) * WINDOW_SECONDS - now))
    return None


# One redis-py client per connection pool: Django's RedisCache builds a new client object
# on every call (~60 us each time in a request's fresh context).
# A client holds no connection of its own; its pool is the process's (redis_pool.py).
_clients: dict[int, tuple[redis.ConnectionPool, redis.Redis]] = {}
_clients_lock = threading.Lock()


def _client() -> redis.Redis:
    pool = cache._cache._get_connection_pool(True)  # Django's RedisCache: the write pool
    known = _clients.get(id(pool))
    if known is None or known[0] is not pool:
        with _clients_lock:
            known = (pool, redis.Redis(connection_pool=pool))
            _clients[id(pool)] = known
    return known[1]


def _count(cache_key: str) -> int:
    key = cache.make_and_validate_key(cache_key)
    pipeline = _client().pipeline(transaction=False)
    pipeline.incr(key)
    pipeline.expire(key, 2 * WINDOW_SECONDS)
    count, _ = pipeline.execute()
    return count
