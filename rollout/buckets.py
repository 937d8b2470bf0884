"""Deterministic percentage buckets.

A signed-in user's bucket for a flag is a stable hash of (flag name, user id) into
``BUCKET_COUNT`` buckets. A user is in the cohort when ``bucket < percent * 100``, so
raising the percentage only adds users (the cohort at 10 % is a subset of the cohort at
50 %), and the decision is the same in every process, device and session, with or without
a request.
"""

import hashlib
from decimal import Decimal

BUCKET_COUNT = 10_000


def user_bucket(*, flag_name: str, user_id: int | str) -> int:
    digest = hashlib.sha256(f"{flag_name}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKET_COUNT


def in_percentage(*, flag_name: str, user_id: int | str, percent: Decimal | float | None) -> bool:
    if not percent or percent <= 0:
        return False
    threshold = int(Decimal(str(percent)) * BUCKET_COUNT / 100)
    return user_bucket(flag_name=flag_name, user_id=user_id) < threshold
