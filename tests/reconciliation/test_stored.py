"""Stored digests of sealed chunks: the copy's kept by its triggers, the local log's kept by
the runs. The hourly run compares them and hashes only what is new or touched; whatever a
holder of the secret key does to the copy is found by the next hourly run; what gets past
the triggers (a superuser with triggers off) is found by the full pass."""

import httpx
import psycopg
import pytest

from events.models import Delivery, DeliveryStatus, Event, Sink
from events.supabase_client import MONITORING_EVENTS_TABLE, service_client
from reconciliation.models import RunMode, RunStatus, SealedChunk
from reconciliation.services import (
    reconciliation_repair,
    reconciliation_run,
    reconciliation_run_hourly,
)
from reconciliation.stored import CHUNK_SEQS

pytestmark = pytest.mark.django_db

ERRORS = ("missing_in_supabase", "extra_in_supabase", "content_mismatch", "checksum_invalid")


def _found(run) -> set[int]:
    return set(run.discrepancies.filter(category__in=ERRORS).values_list("seq", flat=True))


def _stored_equals_live(log) -> bool:
    live = log.sql(
        "SELECT chunk_start, row_count, digest "
        "FROM public.monitoring_events_chunk_digests(1, 1000000, %s)",
        CHUNK_SEQS,
    )
    kept = log.sql(
        "SELECT chunk_start, row_count, digest "
        "FROM public.monitoring_events_stored_digests(0, 1000, 1) WHERE row_count > 0"
    )
    return live == kept


@pytest.fixture
def history(log) -> list[int]:
    """Two sealed chunks and a partial third, mirrored, and an hourly run that sealed them."""
    seqs = log.publish(2 * CHUNK_SEQS + 40)
    log.mirror()
    first = reconciliation_run_hourly()
    assert first.status == RunStatus.CLEAN, first.counts
    return seqs


def test_the_copys_stored_digests_follow_every_write_made_with_the_secret_key(log):
    seqs = log.publish(CHUNK_SEQS + 30)
    log.mirror()  # an upsert through the official client, as the Supabase sink writes
    table = service_client().table(MONITORING_EVENTS_TABLE)
    assert _stored_equals_live(log)

    table.update({"payload": {"edited": True}}).eq("seq", seqs[3]).execute()
    assert _stored_equals_live(log)
    table.delete().in_("seq", [seqs[10], seqs[-1]]).execute()
    assert _stored_equals_live(log)
    log.mirror(seqs=[seqs[10]])
    assert _stored_equals_live(log)
    log.sql("TRUNCATE public.monitoring_events")
    assert log.sql("SELECT count(*) AS n FROM public.monitoring_events_digests")[0]["n"] == 0


def test_no_api_key_can_write_the_stored_digests(log):
    server = log.server
    for key in (server.secret_key, server.publishable_key):
        response = httpx.post(
            f"{server.url}/rest/v1/monitoring_events_digests",
            json={"chunk_no": 0, "row_count": 0, "hash_sum": 0},
            headers={"apikey": key, "Authorization": f"Bearer {key}"},
        )
        assert response.status_code in (401, 403), response.text


def test_the_hourly_run_hashes_only_the_chunks_sealed_since_the_last_one(log, history):
    assert SealedChunk.objects.count() == 2
    log.publish(CHUNK_SEQS)
    log.mirror()

    run = reconciliation_run_hourly()

    assert (run.status, run.mode, run.from_seq) == (RunStatus.CLEAN, RunMode.INCREMENTAL, 1)
    assert run.to_seq == 3 * CHUNK_SEQS + 40
    assert SealedChunk.objects.count() == 3
    # the third chunk, sealed now, and the 40 newest events compared live (one chunk's worth)
    assert run.chunks_rehashed == 2
    assert run.chunks_compared >= 3
    assert run.events_judged == 3 * CHUNK_SEQS + 40


def test_edits_of_old_and_new_rows_with_the_secret_key_are_found_by_the_next_hourly_run(
    log, history
):
    table = service_client().table(MONITORING_EVENTS_TABLE)
    # an old row edited behind its unchanged checksum, an old row deleted, a new one
    # deleted, and a row the local log does not hold added above it
    table.update({"payload": {"planted": True}}).eq("seq", history[5]).execute()
    table.delete().eq("seq", history[CHUNK_SEQS + 7]).execute()
    table.delete().eq("seq", history[-3]).execute()
    extra = dict(log.sql("SELECT * FROM public.monitoring_events WHERE seq = %s", history[0])[0])
    extra.pop("published_at")
    extra.update(seq=history[-1] + 5, occurred_at=extra["occurred_at"].isoformat())
    extra.update(received_at=extra["received_at"].isoformat())
    table.insert(extra, returning="minimal").execute()

    run = reconciliation_run_hourly()

    planted = {history[5], history[CHUNK_SEQS + 7], history[-3], history[-1] + 5}
    assert (run.status, _found(run)) == (RunStatus.DISCREPANCIES, planted)
    assert run.chunks_rehashed <= 3  # the two touched chunks and the live tail
    result = reconciliation_repair(run_id=run.pk, delete_extras=True)
    assert not result.remaining
    assert reconciliation_run_hourly().status == RunStatus.CLEAN


def test_a_write_behind_the_triggers_is_found_by_the_full_pass_which_rewrites_the_store(
    log, history
):
    with psycopg.connect(log.server.database_url, autocommit=True) as superuser:
        superuser.execute("SET session_replication_role = replica")  # triggers off
        superuser.execute("DELETE FROM public.monitoring_events WHERE seq = %s", [history[100]])
    hourly = reconciliation_run_hourly()
    assert hourly.status == RunStatus.CLEAN  # the stored digest never saw the delete

    full = reconciliation_run(full=True)

    assert (full.mode, full.status, _found(full)) == (
        RunMode.FULL,
        RunStatus.DISCREPANCIES,
        {history[100]},
    )
    assert full.stored_digests_rewritten == {"supabase": 1}
    assert full.chunks_rehashed >= 3
    assert _stored_equals_live(log)
    # the rewritten store lets the hourly run see it from now on
    assert _found(reconciliation_run_hourly()) == {history[100]}


def test_a_local_stored_digest_that_no_longer_matches_its_rows_is_rewritten_not_reported(
    log, history
):
    SealedChunk.objects.filter(chunk_no=1).update(digest=12345)

    run = reconciliation_run_hourly()

    assert (run.status, run.discrepancy_count) == (RunStatus.CLEAN, 0)
    assert run.stored_digests_rewritten == {"local": 1}
    assert SealedChunk.objects.get(chunk_no=1).digest != 12345


def test_an_edit_of_the_local_log_in_a_sealed_chunk_unseals_it_and_the_next_run_finds_it(
    log, history
):
    Delivery.objects.filter(event_id=history[5]).update(attempts=9)  # not its digest's
    assert SealedChunk.objects.filter(chunk_no=0).exists()
    Event.objects.filter(seq=history[7]).update(payload={"edited": "locally"})
    assert not SealedChunk.objects.filter(chunk_no=0).exists()  # the log's trigger
    Delivery.objects.filter(event_id=history[CHUNK_SEQS + 1], sink=Sink.SUPABASE).update(
        status=DeliveryStatus.SKIPPED
    )
    assert not SealedChunk.objects.filter(chunk_no=1).exists()

    Delivery.objects.filter(event_id=history[CHUNK_SEQS + 2]).update(attempts=5)  # no matter
    assert not SealedChunk.objects.filter(chunk_no=1).exists()

    run = reconciliation_run_hourly()

    # (a copy of an event routed away is tolerated while it is identical: not reported)
    assert _found(run) == {history[7]}
    assert SealedChunk.objects.filter(chunk_no__in=[0, 1]).count() == 2


def test_the_full_pass_can_re_hash_the_local_log_too(log, history, settings):
    settings.RECONCILIATION_FULL_PASS_REHASH_LOCAL = True
    SealedChunk.objects.filter(chunk_no=0).update(digest=777)  # as if written behind triggers

    run = reconciliation_run(full=True)

    assert (run.status, run.stored_digests_rewritten) == (RunStatus.CLEAN, {"local": 1})
    assert SealedChunk.objects.get(chunk_no=0).digest != 777


def test_two_writers_of_one_chunk_never_wait_for_each_other_and_both_are_counted(log):
    seqs = log.publish(4)
    row = (
        "INSERT INTO public.monitoring_events (seq, event_type, source, criticality,"
        " occurred_at, received_at, payload, checksum)"
        " VALUES (%s, 'x', 'tests', 'system', now(), now(), '{}', repeat('b', 64))"
    )
    with (
        psycopg.connect(log.server.database_url) as first,
        psycopg.connect(log.server.database_url) as second,
    ):
        second.execute("SET lock_timeout = '2s'")  # a wait on the first would fail here
        first.execute(row, [seqs[0]])
        second.execute(row, [seqs[1]])
        second.commit()
        assert _stored_equals_live(log)  # the first is not committed: not counted yet
        first.commit()

    assert _stored_equals_live(log)
