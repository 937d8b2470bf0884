"""Alerts raised by runs, and the repair service."""

import pytest

from events.models import Route
from reconciliation.models import Category, RunStatus
from reconciliation.services import reconciliation_repair, reconciliation_run
from rollout.models import Alert

pytestmark = pytest.mark.django_db


def test_a_discrepancy_on_a_critical_event_raises_an_alert(log, settings):
    settings.RECONCILIATION_CONSISTENCY_THRESHOLD = 0.5
    log.publish(50)
    (critical,) = log.publish(1, event_type="payment.error")
    log.mirror()
    log.sql("DELETE FROM public.monitoring_events WHERE seq = %s", critical)

    run = reconciliation_run()

    assert run.discrepancies.get().criticality == "critical"
    alert = Alert.objects.get(kind="reconciliation_discrepancy")
    assert alert.severity == "critical"
    assert str(critical) in alert.message
    assert alert.figures["run_id"] == run.pk and alert.figures["critical_seqs"] == [critical]
    assert not Alert.objects.filter(kind="reconciliation_consistency").exists()


def test_a_low_consistency_rate_raises_an_alert(log):
    seqs = log.publish(100)
    log.mirror()
    log.sql("DELETE FROM public.monitoring_events WHERE seq = %s", seqs[0])

    run = reconciliation_run()

    assert run.consistency_rate == pytest.approx(0.99)
    alert = Alert.objects.get(kind="reconciliation_consistency")
    assert alert.figures["threshold"] == 0.9999
    assert not Alert.objects.filter(kind="reconciliation_discrepancy").exists()  # system events


def test_a_clean_run_raises_nothing(log):
    log.publish(10)
    log.mirror()

    reconciliation_run()

    assert not Alert.objects.exists()


def _damage(log, seqs):
    top = seqs[-1]
    log.sql("DELETE FROM public.monitoring_events WHERE seq = %s", seqs[1])
    log.sql("""UPDATE public.monitoring_events SET payload = '{"x": 1}' WHERE seq = %s""", seqs[2])
    log.sql("UPDATE public.monitoring_events SET criticality = 'debug' WHERE seq = %s", seqs[3])
    log.sql(
        "INSERT INTO public.monitoring_events SELECT %s, event_type, source, criticality,"
        " occurred_at, received_at, payload, checksum FROM public.monitoring_events"
        " WHERE seq = %s",
        top + 7,
        seqs[0],
    )
    return top + 7


def test_repair_makes_the_next_run_clean(log):
    seqs = log.publish(120)
    log.mirror()
    extra = _damage(log, seqs)
    first = reconciliation_run()
    assert first.discrepancy_count == 4

    result = reconciliation_repair(run_id=first.pk, delete_extras=True)

    assert (result.upserted, result.deleted, result.repaired) == (3, 1, 4)
    assert result.remaining == [] and result.not_attempted == {}
    assert first.discrepancies.filter(repaired_at__isnull=True).count() == 0
    assert (
        log.sql("SELECT count(*) AS n FROM public.monitoring_events WHERE seq = %s", extra)[0]["n"]
        == 0
    )
    second = reconciliation_run()
    assert second.status == RunStatus.CLEAN
    assert second.discrepancies.count() == 0


def test_extras_are_deleted_only_when_asked(log):
    seqs = log.publish(30)
    log.mirror()
    extra = _damage(log, seqs)
    run = reconciliation_run()

    result = reconciliation_repair(run_id=run.pk)

    assert result.deleted == 0 and result.repaired == 3
    assert result.remaining == [extra]
    assert "delete not requested" in result.not_attempted[extra]
    again = reconciliation_run()
    assert {d.category for d in again.discrepancies.all()} == {Category.EXTRA_IN_SUPABASE}


def test_repair_of_chosen_discrepancies_only(log):
    seqs = log.publish(30)
    log.mirror()
    _damage(log, seqs)
    run = reconciliation_run()
    missing = run.discrepancies.get(category=Category.MISSING_IN_SUPABASE)

    result = reconciliation_repair(discrepancy_ids=[missing.pk])

    assert (result.upserted, result.repaired) == (1, 1)
    again = reconciliation_run()
    assert again.discrepancy_count == 3
    assert missing.seq not in {d.seq for d in again.discrepancies.all()}


def test_repair_never_copies_an_event_whose_own_checksum_is_invalid(log):
    from events.models import Event

    seqs = log.publish(10)
    log.mirror()
    Event.objects.filter(seq=seqs[0]).update(checksum="f" * 64)
    run = reconciliation_run()

    result = reconciliation_repair(run_id=run.pk)

    assert result.upserted == 0
    assert "own checksum is invalid" in result.not_attempted[seqs[0]]


def test_a_route_that_stops_skipping_turns_absence_into_missing(log):
    debug = log.publish(3, event_type="test.debug")
    log.mirror()
    assert reconciliation_run().counts == {"expected_absent": 3}
    # the route change affects new events only; old skipped ones stay expected-absent
    Route.objects.filter(criticality="debug").update(to_supabase=True)
    newer = log.publish(2, event_type="test.debug")

    run = reconciliation_run()

    assert run.counts == {"expected_absent": 3, "missing_in_supabase": 2}
    assert {d.seq for d in run.discrepancies.filter(category="missing_in_supabase")} == set(newer)
    assert {d.seq for d in run.discrepancies.filter(category="expected_absent")} == set(debug)
