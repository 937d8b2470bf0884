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
import time

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


def _count(cache_key: str) -> int:
    key = cache.make_and_validate_key(cache_key)
    client = cache._cache.get_client(key, write=True)  # one per pool (redis_pool.py)
    pipeline = client.pipeline(transaction=False)
    pipeline.incr(key)
    pipeline.expire(key, 2 * WINDOW_SECONDS)
    count, _ = pipeline.execute()
    return count
