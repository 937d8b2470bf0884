"""Events stored before the canonical form wrote numbers as jsonb prints them: after
migration events.0006 rewrites the local checksums, a run finds the Supabase copies'
old checksums invalid and a repair makes the next run clean (docs/runbook.md)."""

import importlib

import pytest
from django.apps import apps

from events.checksums import event_checksum_of
from events.models import Event
from reconciliation.models import Category, RunStatus
from reconciliation.services import reconciliation_repair, reconciliation_run
from tests.events.test_migrations import checksum_before_0006

pytestmark = pytest.mark.django_db

recompute = importlib.import_module(
    "events.migrations.0006_checksums_numbers_as_jsonb_prints_them"
).checksums_recompute


def test_old_checksums_are_found_on_the_supabase_side_and_repaired(log):
    log.publish(20)
    (old,) = log.publish(1, tiny=1e-05)
    event = Event.objects.get(seq=old)
    before = checksum_before_0006(event)
    Event.objects.filter(seq=old).update(checksum=before)  # as stored before the change
    log.mirror()
    assert reconciliation_run().status == RunStatus.CLEAN  # both copies equally old

    assert recompute(apps, None) == 1

    run = reconciliation_run()
    (found,) = run.discrepancies.all()
    assert (found.seq, found.category) == (old, Category.CHECKSUM_INVALID)
    assert found.details["side"] == "supabase"
    result = reconciliation_repair(run_id=run.pk)
    assert (result.upserted, result.repaired, result.remaining) == (1, 1, [])
    assert reconciliation_run().status == RunStatus.CLEAN
    remote = log.sql("SELECT checksum FROM public.monitoring_events WHERE seq = %s", old)
    assert remote[0]["checksum"].strip() == event_checksum_of(event) != before
