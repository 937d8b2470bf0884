"""The admin: runs with figures and a consistency chart, discrepancies by category,
repair behind a confirmation page."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from reconciliation.models import Discrepancy
from reconciliation.services import reconciliation_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-x-123")
    client.force_login(admin)
    return client


@pytest.fixture
def damaged_run(log):
    seqs = log.publish(60)
    log.publish(2, event_type="test.debug")
    log.mirror()
    log.sql("DELETE FROM public.monitoring_events WHERE seq = %s", seqs[3])
    log.sql("""UPDATE public.monitoring_events SET payload = '{}' WHERE seq = %s""", seqs[4])
    reconciliation_run()  # an earlier run for the chart
    return reconciliation_run()


def test_the_runs_list_shows_figures_and_a_consistency_chart(admin_client_, damaged_run):
    response = admin_client_.get(reverse("admin:reconciliation_reconciliationrun_changelist"))

    html = response.content.decode()
    assert response.status_code == 200
    assert '<svg id="recon-consistency-chart"' in html
    assert html.count("<circle") == 2
    assert "96.6667%" in html  # 58 of 60 agree
    assert f"run #{damaged_run.pk}" in html  # the point's tooltip
    assert "missing_in_supabase: 1" in html and "checksum_invalid: 1" in html


def test_a_run_page_and_its_discrepancies_filtered_by_category(admin_client_, damaged_run):
    page = admin_client_.get(
        reverse("admin:reconciliation_reconciliationrun_change", args=[damaged_run.pk])
    )
    assert page.status_code == 200

    listing = admin_client_.get(
        reverse("admin:reconciliation_discrepancy_changelist"),
        {"run__id__exact": damaged_run.pk, "category__exact": "missing_in_supabase"},
    )
    assert listing.status_code == 200
    shown = list(listing.context["cl"].result_list)
    assert [(d.run_id, d.category) for d in shown] == [(damaged_run.pk, "missing_in_supabase")]


def test_repairing_a_run_asks_first_then_repairs(admin_client_, damaged_run):
    url = reverse("admin:reconciliation_reconciliationrun_changelist")
    data = {"action": "repair_runs", ACTION_CHECKBOX_NAME: [damaged_run.pk]}

    confirmation = admin_client_.post(url, data)

    assert confirmation.status_code == 200
    html = confirmation.content.decode()
    assert "Repair the Supabase copy?" in html and "missing_in_supabase: 1" in html
    assert Discrepancy.objects.filter(repaired_at__isnull=False).count() == 0

    done = admin_client_.post(url, {**data, "post": "yes"}, follow=True)

    assert "2 discrepancies verified fixed, 0 remaining" in done.content.decode()
    assert reconciliation_run().discrepancy_count == 0


def test_repairing_chosen_discrepancies(admin_client_, damaged_run):
    missing = damaged_run.discrepancies.get(category="missing_in_supabase")
    url = reverse("admin:reconciliation_discrepancy_changelist")
    data = {"action": "repair_selected", ACTION_CHECKBOX_NAME: [missing.pk]}

    assert "Yes, repair" in admin_client_.post(url, data).content.decode()
    admin_client_.post(url, {**data, "post": "yes"})

    missing.refresh_from_db()
    assert missing.repaired_at is not None
    assert reconciliation_run().discrepancy_count == 1


def test_the_schedules_are_rows_editable_in_the_admin():
    from django_celery_beat.models import PeriodicTask

    tasks = {t.task: t for t in PeriodicTask.objects.filter(task__startswith="reconciliation.")}
    assert set(tasks) == {"reconciliation.run_hourly", "reconciliation.run_recheck"}
    assert all(t.enabled and t.crontab.minute and t.crontab.hour == "*" for t in tasks.values())
