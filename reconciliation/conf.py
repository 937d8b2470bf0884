"""Reconciliation settings, read here with their defaults.

The lead adds them to ``monitor_project/settings`` (and the README); until then, and
whenever a deployment leaves one out, the default below applies. Read them through
``reconciliation_setting`` at call time, never at import time, so that tests overriding
settings are seen.
"""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Events younger than this (by received_at) are not judged: the dual write may still
    # be on its way.
    "RECONCILIATION_GRACE_SECONDS": 120,
    # Under this share of judged events that agree (0..1), a run raises an alert.
    "RECONCILIATION_CONSISTENCY_THRESHOLD": 0.9999,
    # Rows per first-level chunk; one call asks for at most MAX_CHUNKS_PER_CALL chunks, so
    # 1,000,000 seqs are 16 calls with the defaults.
    "RECONCILIATION_CHUNK_SIZE": 64,
    # Most rows one Supabase answer may carry (PostgREST's db-max-rows; 1000 on Supabase).
    "RECONCILIATION_MAX_CHUNKS_PER_CALL": 1000,
    # An unequal chunk is split into this many parts until it holds at most LEAF_ROWS rows,
    # whose rows are then fetched and compared one by one.
    "RECONCILIATION_FANOUT": 16,
    "RECONCILIATION_LEAF_ROWS": 16,
    # When the unequal chunks hold at most this many seqs in all, their rows are fetched
    # at once instead of being split and hashed again (hashing in PostgreSQL costs ~3 µs
    # a row, fetching and judging a row in Python ~50-150 µs).
    "RECONCILIATION_FETCH_BUDGET_ROWS": 16384,
    # Unequal chunks closer than this (in seqs) are re-hashed in one call rather than two:
    # hashing ~2,000 rows costs about one round trip.
    "RECONCILIATION_MERGE_GAP_ROWS": 2048,
    # Parallel calls to Supabase (the local side runs meanwhile in the calling thread).
    "RECONCILIATION_REMOTE_CONCURRENCY": 2,
    # A run stops (status timed_out, figures so far kept) after this many seconds.
    "RECONCILIATION_TIME_LIMIT_SECONDS": 600,
    # Expected-absent events are counted exactly; only this many are stored one by one.
    "RECONCILIATION_EXPECTED_ABSENT_SAMPLE": 100,
    # Error discrepancies stored per run (counts stay exact beyond it).
    "RECONCILIATION_MAX_DISCREPANCIES": 10000,
    # The rolling full pass covers this many seqs per run, oldest first, then wraps
    # (10,000 sealed chunks: ~10 s of hashing in Supabase per run on a 2-core machine).
    "RECONCILIATION_RECHECK_ROWS": 10_240_000,
    # The full pass re-hashes the Supabase copy; the local log's stored digests are kept
    # honest by its own triggers. True re-hashes the local log too (after a restore, or a
    # superuser's SQL with triggers off).
    "RECONCILIATION_FULL_PASS_REHASH_LOCAL": False,
    # Rows per upsert when repairing.
    "RECONCILIATION_REPAIR_BATCH_SIZE": 500,
}


def reconciliation_setting(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])
