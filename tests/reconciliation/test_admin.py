"""The admin: runs with figures and a consistency chart, discrepancies by category,
repair behind a confirmation page, and "Run now" for those allowed."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from monitor_project.celery import app as celery_app
from reconciliation.models import Discrepancy, ReconciliationRun, RunStatus, RunTrigger
from reconciliation.services import ADVISORY_LOCK_KEY, reconciliation_run
from tests.fixtures.database import other_connection
from tests.rollout.factories import permissions_grant

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
    assert "<strong>2</strong>" in html  # the run's discrepancies, above their categories


def _row(html: str, run_id: int) -> str:
    start = html.index(f'value="{run_id}"')  # the row's action checkbox
    return html[start : html.index("</tr>", start)]


def test_a_clean_run_reads_events_compared_and_zero_discrepancies(admin_client_, log):
    log.publish(37)
    log.publish(3, event_type="test.debug")  # routed away from Supabase: expected absent
    log.mirror()
    run = reconciliation_run()
    assert run.status == RunStatus.CLEAN

    html = admin_client_.get(reverse("admin:reconciliation_reconciliationrun_changelist"))
    html = html.content.decode()

    assert "Events compared" in html and "Expected absent (not errors)" in html
    row = _row(html, run.pk)
    cells = [cell.split(">", 1)[1] for cell in row.split("<td")[1:]]  # after the id's <th>
    names = ("mode", "status", "seqs", "chunks", "compared", "consistency", "discrepancies")
    figures = dict(zip(names, cells[2:9], strict=True))
    figures["absent"] = cells[9]
    assert figures["mode"].startswith("Incremental")
    assert figures["chunks"].startswith("1 / 1<")  # 40 seqs: one chunk's worth, hashed live
    assert figures["compared"].startswith("37<")
    assert figures["discrepancies"].startswith("0<")
    assert "expected_absent: 3" in figures["absent"]


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


# --- Run now ---------------------------------------------------------------------------------

RUNS = "/admin/reconciliation/reconciliationrun/"
RUN_NOW = "/admin/reconciliation/reconciliationrun/run-now/"


@pytest.fixture
def eager_celery():
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


def test_the_run_now_url_is_in_the_admin():
    assert reverse("admin:reconciliation_reconciliationrun_run_now") == RUN_NOW


def test_run_now_queues_a_manual_run_after_commit(
    admin_client_, log, eager_celery, django_capture_on_commit_callbacks
):
    log.publish(5)
    log.mirror()
    assert "Run now" in admin_client_.get(RUNS).content.decode()

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client_.post(RUN_NOW)
        assert not ReconciliationRun.objects.exists()  # nothing runs before the commit
    assert response.status_code == 302 and response.url == RUNS
    assert len(callbacks) == 1

    callbacks[0]()  # the commit: the task runs (eagerly here, in a worker for real)

    run = ReconciliationRun.objects.get()
    assert (run.trigger, run.status, run.events_judged) == (RunTrigger.MANUAL, "clean", 5)
    assert "Reconciliation run queued" in admin_client_.get(RUNS).content.decode()


def test_run_now_is_refused_while_another_run_holds_the_lock(
    admin_client_, log, django_capture_on_commit_callbacks
):
    with (
        other_connection() as other,
        django_capture_on_commit_callbacks() as callbacks,
    ):
        other.execute("SELECT pg_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
        page = admin_client_.post(RUN_NOW, follow=True)
    assert callbacks == []
    assert "Another reconciliation (a repair) is in progress" in page.content.decode()


def test_run_now_says_so_when_supabase_is_not_configured(
    admin_client_, settings, django_capture_on_commit_callbacks
):
    settings.SUPABASE_URL = ""
    with django_capture_on_commit_callbacks() as callbacks:
        page = admin_client_.post(RUN_NOW, follow=True)
    assert callbacks == []
    assert "Supabase is not configured" in page.content.decode()


def test_run_now_is_post_only(admin_client_):
    assert admin_client_.get(RUN_NOW).status_code == 405


def test_staff_without_the_permission_see_no_button_and_are_refused(
    client, staff_user, django_capture_on_commit_callbacks
):
    viewer = permissions_grant(staff_user, "reconciliation.view_reconciliationrun")
    client.force_login(viewer)
    page = client.get(RUNS)
    assert page.status_code == 200 and "Run now" not in page.content.decode()

    with django_capture_on_commit_callbacks() as callbacks:
        refused = client.post(RUN_NOW)

    assert refused.status_code == 403 and callbacks == []
    assert "reconciliation.run_reconciliation" in refused.content.decode()


def test_staff_with_the_permission_get_the_button(
    client, staff_user, log, django_capture_on_commit_callbacks
):
    operator = permissions_grant(
        staff_user,
        "reconciliation.view_reconciliationrun",
        "reconciliation.run_reconciliation",
    )
    client.force_login(operator)
    assert "Run now" in client.get(RUNS).content.decode()
    with django_capture_on_commit_callbacks() as callbacks:
        assert client.post(RUN_NOW).status_code == 302
    assert len(callbacks) == 1


def test_run_now_needs_the_csrf_token(log, django_user_model, django_capture_on_commit_callbacks):
    from django.test import Client

    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw-x-123")
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(root)
    strict.get(RUNS)  # sets the csrftoken cookie, as a browser would
    token = strict.cookies["csrftoken"].value

    with django_capture_on_commit_callbacks() as without_token:
        assert strict.post(RUN_NOW).status_code == 403
    with django_capture_on_commit_callbacks() as with_token:
        assert strict.post(RUN_NOW, {"csrfmiddlewaretoken": token}).status_code == 302

    assert (len(without_token), len(with_token)) == (0, 1)
