"""reconciliation_run against a real supabase_local: each category, found on purpose."""

import hashlib

import pytest

from events.models import Delivery, DeliveryStatus, Event, Sink
from reconciliation.models import Category, RunStatus
from reconciliation.services import reconciliation_repair, reconciliation_run

pytestmark = pytest.mark.django_db


def _categories(run) -> dict[int, str]:
    return {d.seq: d.category for d in run.discrepancies.all()}


def test_equal_sides_give_a_clean_run(log):
    log.publish(500)
    log.mirror()

    run = reconciliation_run()

    assert run.status == RunStatus.CLEAN, run.error
    assert (run.from_seq, run.to_seq) == (1, 500)
    assert run.discrepancies.count() == 0
    assert run.counts == {}
    assert run.events_judged == run.events_agreeing == 500
    assert run.consistency_rate == 1.0
    # first level only: ceil(500 / (64 * 8)) = 1 RPC call, and the tail probe
    assert run.round_trips_supabase == 2
    assert run.chunks_compared == 8
    assert run.rows_fetched_supabase == run.rows_fetched_local == 0  # digests only, no rows
    assert run.finished_at is not None and run.duration_ms >= 0


def test_a_row_deleted_in_supabase_is_missing(log):
    seqs = log.publish(300)
    log.mirror()
    log.sql("DELETE FROM public.monitoring_events WHERE seq = %s", seqs[150])

    run = reconciliation_run()

    assert run.status == RunStatus.DISCREPANCIES
    assert _categories(run) == {seqs[150]: Category.MISSING_IN_SUPABASE}
    assert run.counts == {"missing_in_supabase": 1}
    assert run.events_agreeing == 299 and run.events_judged == 300
    # bisection fetched a few leaves, not the whole range
    assert run.rows_fetched_local < 40


def test_rows_added_in_supabase_are_extras(log):
    seqs = log.publish(100)
    log.mirror()
    top = seqs[-1]
    log.sql(
        "INSERT INTO public.monitoring_events SELECT seq + %s, event_type, source, criticality,"
        " occurred_at, received_at, payload, checksum FROM public.monitoring_events"
        " WHERE seq = %s",
        top,
        seqs[0],
    )

    open_ended = reconciliation_run()
    explicit = reconciliation_run(from_seq=1, to_seq=top + 100)

    for run in (open_ended, explicit):
        assert _categories(run) == {top + 1: Category.EXTRA_IN_SUPABASE}
        discrepancy = run.discrepancies.get()
        assert discrepancy.details["supabase_checksum_valid"] is False  # seq is in the hash


def test_a_payload_edited_in_supabase_alone_is_a_checksum_invalid_row(log):
    seqs = log.publish(200)
    log.mirror()
    log.sql(
        """UPDATE public.monitoring_events SET payload = payload || '{"i": -1}' WHERE seq = %s""",
        seqs[77],
    )

    run = reconciliation_run()

    discrepancy = run.discrepancies.get()
    assert discrepancy.seq == seqs[77]
    assert discrepancy.category == Category.CHECKSUM_INVALID
    assert discrepancy.fields == ["payload"]
    assert discrepancy.details["side"] == "supabase"
    assert discrepancy.details["supabase"]["payload"]["i"] == -1


def test_an_edit_with_its_checksum_is_a_content_mismatch(log):
    seqs = log.publish(200)
    log.mirror()
    event = Event.objects.get(seq=seqs[9])
    from events.checksums import event_checksum

    new_checksum = event_checksum(
        seq=event.seq,
        event_type=event.event_type,
        source="forged",
        criticality=event.criticality,
        occurred_at=event.occurred_at,
        received_at=event.received_at,
        payload=event.payload,
    )
    log.sql(
        "UPDATE public.monitoring_events SET source = 'forged', checksum = %s WHERE seq = %s",
        new_checksum,
        event.seq,
    )

    run = reconciliation_run()

    discrepancy = run.discrepancies.get()
    assert discrepancy.category == Category.CONTENT_MISMATCH
    assert discrepancy.fields == ["source", "checksum"]
    assert discrepancy.details["local"]["source"] == "recon-tests"
    assert discrepancy.details["supabase"]["source"] == "forged"


def test_a_local_event_with_a_wrong_checksum_is_found_on_the_local_side(log):
    seqs = log.publish(50)
    log.mirror()
    Event.objects.filter(seq=seqs[3]).update(checksum=hashlib.sha256(b"x").hexdigest())

    run = reconciliation_run()

    discrepancy = run.discrepancies.get()
    assert discrepancy.category == Category.CHECKSUM_INVALID
    assert discrepancy.details["side"] == "local"
    assert discrepancy.fields == ["checksum"]


def test_a_skipped_delivery_is_expected_absent_and_not_an_error(log):
    log.publish(20)
    debug = log.publish(3, event_type="test.debug")
    log.mirror()  # mirrors only what is routed to Supabase

    run = reconciliation_run()

    assert run.status == RunStatus.CLEAN
    assert run.counts == {"expected_absent": 3}
    assert _categories(run) == dict.fromkeys(debug, Category.EXPECTED_ABSENT)
    assert run.discrepancy_count == 0
    assert run.events_judged == 20 and run.consistency_rate == 1.0


def test_a_row_added_in_supabase_at_a_routed_away_seq_is_an_extra_deleted_on_request(log):
    log.publish(20)
    debug = log.publish(2, event_type="test.debug")
    log.mirror()
    log.sql(
        "INSERT INTO public.monitoring_events (seq, event_type, source, criticality,"
        " occurred_at, received_at, payload, checksum)"
        " VALUES (%s, 'planted', 'x', 'system', now() - interval '1 hour',"
        " now() - interval '1 hour', '{}', repeat('a', 64))",
        debug[0],
    )

    run = reconciliation_run()

    assert _categories(run)[debug[0]] == Category.EXTRA_IN_SUPABASE
    assert run.discrepancies.get(seq=debug[0]).details["routed_away"] is True
    assert reconciliation_repair(run_id=run.pk).not_attempted == {
        debug[0]: "extra in Supabase: delete not requested"
    }
    assert reconciliation_repair(run_id=run.pk, delete_extras=True).deleted == 1
    assert log.sql("SELECT seq FROM public.monitoring_events WHERE seq = %s", debug[0]) == []


def test_an_old_pending_delivery_is_missing(log):
    seqs = log.publish(20)
    log.mirror(seqs[:-1])  # the last one never reached Supabase

    run = reconciliation_run()

    discrepancy = run.discrepancies.get()
    assert discrepancy.seq == seqs[-1]
    assert discrepancy.category == Category.MISSING_IN_SUPABASE
    assert discrepancy.details["delivery_status"] == DeliveryStatus.PENDING


def test_events_inside_the_grace_period_are_not_judged(log, settings):
    settings.RECONCILIATION_GRACE_SECONDS = 120
    seqs = log.publish(30)
    log.mirror(seqs[:10])  # 20 young events still pending

    run = reconciliation_run()

    assert run.status == RunStatus.CLEAN
    assert run.events_judged == 0
    assert run.to_seq < seqs[0]  # the range stops before the young events
    assert run.counts == {"expected_absent": 20}
    assert {d.details["reason"] for d in run.discrepancies.all()} == {
        "delivery pending within the grace period"
    }
    # an explicit range over young events judges none of them either
    explicit = reconciliation_run(from_seq=seqs[0], to_seq=seqs[-1])
    assert explicit.status == RunStatus.CLEAN
    assert explicit.events_not_judged == 30 and explicit.events_judged == 0

    # once the grace period is over they are judged
    settings.RECONCILIATION_GRACE_SECONDS = 0
    run = reconciliation_run()
    assert run.counts == {"missing_in_supabase": 20}


def test_a_failed_delivery_inside_the_grace_period_is_expected_absent(log, settings):
    settings.RECONCILIATION_GRACE_SECONDS = 120
    (seq,) = log.publish(1)
    Delivery.objects.filter(event_id=seq, sink=Sink.SUPABASE).update(
        status=DeliveryStatus.FAILED, last_error="boom"
    )

    run = reconciliation_run()

    assert run.status == RunStatus.CLEAN
    assert _categories(run) == {seq: Category.EXPECTED_ABSENT}


def test_many_scattered_differences_are_all_found(log):
    seqs = log.publish(1000)
    log.mirror()
    broken = seqs[3::97]
    log.sql("DELETE FROM public.monitoring_events WHERE seq = ANY(%s)", broken)

    run = reconciliation_run()

    assert sorted(_categories(run)) == broken
    assert run.events_agreeing == 1000 - len(broken)
    assert run.consistency_rate == pytest.approx((1000 - len(broken)) / 1000)


def test_a_run_over_the_time_limit_stops_and_says_so(log, settings):
    log.publish(10)
    log.mirror()
    settings.RECONCILIATION_TIME_LIMIT_SECONDS = 0

    run = reconciliation_run()

    assert run.status == RunStatus.TIMED_OUT
    assert "time limit" in run.error


def test_an_unreachable_supabase_fails_the_run_with_the_error(log, settings):
    log.publish(5)
    settings.SUPABASE_URL = "http://127.0.0.1:9"  # nothing listens there

    run = reconciliation_run()

    assert run.status == RunStatus.FAILED
    assert run.error
    from rollout.models import Alert

    alert = Alert.objects.get(kind="reconciliation_failed")
    assert alert.severity == "warning" and f"#{run.pk}" in alert.message


def test_a_number_whose_jsonb_text_differs_is_still_found(log):
    # given: 2.5 in the local payload, 2.50 in the copy: equal values in Python, but not
    # the same jsonb text, so the row digests differ
    seqs = log.publish(40)
    log.mirror()
    log.sql(
        "UPDATE public.monitoring_events SET payload = jsonb_set(payload, '{nested,b,1}',"
        " '2.50'::jsonb) WHERE seq = %s",
        seqs[20],
    )

    run = reconciliation_run()

    discrepancy = run.discrepancies.get()
    assert (discrepancy.seq, discrepancy.category) == (seqs[20], Category.CONTENT_MISMATCH)
    assert "jsonb text" in discrepancy.details["note"]


def test_rows_written_by_the_real_supabase_sink_agree(log):
    from events.services import supabase_sink_flush

    log.publish(30, payload_float=0.1, big=10**16)
    log.publish(2, event_type="test.debug")
    while supabase_sink_flush().sent:
        pass

    run = reconciliation_run()

    assert log.remote_count() == 30
    assert run.status == RunStatus.CLEAN, run.counts
    assert run.counts == {"expected_absent": 2}


def test_few_unequal_chunks_are_fetched_at_once_instead_of_split(log, settings):
    settings.RECONCILIATION_FETCH_BUDGET_ROWS = 10_000
    seqs = log.publish(300)
    log.mirror()
    log.sql("DELETE FROM public.monitoring_events WHERE seq = %s", seqs[150])

    run = reconciliation_run()

    assert _categories(run) == {seqs[150]: Category.MISSING_IN_SUPABASE}
    # one first-level call, one fetch of the unequal 64-seq chunk, the tail probe
    assert run.round_trips_supabase == 3
    assert run.rows_fetched_local == 64 and run.rows_fetched_supabase == 63


def test_stored_rows_are_capped_but_counts_stay_exact(log, settings):
    settings.RECONCILIATION_MAX_DISCREPANCIES = 2
    settings.RECONCILIATION_EXPECTED_ABSENT_SAMPLE = 1
    seqs = log.publish(50)
    log.publish(4, event_type="test.debug")
    log.mirror()
    log.sql("DELETE FROM public.monitoring_events WHERE seq = ANY(%s)", seqs[10:15])

    run = reconciliation_run()

    assert run.counts == {"expected_absent": 4, "missing_in_supabase": 5}
    assert run.discrepancy_count == 5 and run.events_agreeing == 45
    assert run.discrepancies.filter(category="missing_in_supabase").count() == 2
    assert run.discrepancies.filter(category="expected_absent").count() == 1
