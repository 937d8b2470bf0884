"""The rollout report: stages with their analyses and verdicts, every breach, rollback,
resume, forced promotion, reconciliation run and alert; a staff page, its print view,
JSON and CSV exports, and ``manage.py rollout report``."""

import csv
import io
import json

import pytest
from django.core.management import call_command
from django.utils import timezone

from rollout import services
from rollout.models import StageAnalysis
from tests.rollout.factories import analysis_passing, samples_add

pytestmark = pytest.mark.django_db

REPORT = "/admin/rollout/report/"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("rollout", *args, stdout=out)
    return out.getvalue()


def test_report_json_on_a_fresh_database_after_rollout_stage_10_lists_the_stage_with_its_analysis(
    django_capture_on_commit_callbacks, celery_eager
):
    # given a fresh database: no evidence, so the plain command refuses
    with pytest.raises(Exception, match="promotion needs a passing analysis"):
        run("stage", "10")
    with django_capture_on_commit_callbacks(execute=True):
        run("stage", "10", "--force", "--reason", "first cohort, fresh database")
    # when
    report = json.loads(run("report", "--json"))
    # then: shadow, ended by a forced promotion, with its final analysis; 10 in force, with
    # the evidence so far
    shadow, ten = report["stages"]
    assert (shadow["stage"], shadow["current"], shadow["verdict"]) == (
        "shadow", False, "inconclusive",
    )  # fmt: skip
    assert [a["final"] for a in shadow["analyses"]] == [True]
    assert shadow["ended_at"] == ten["started_at"]
    assert (ten["stage"], ten["current"], ten["forced"], ten["started_by"]) == (
        "10", True, True, "system",
    )  # fmt: skip
    (analysis,) = ten["analyses"]
    assert analysis["recorded"] is False and analysis["verdict"] == "inconclusive"
    assert set(analysis["transports"]) == {"supabase", "websocket"}
    assert analysis["quota_headroom"]["stage"]["stage"] == "10"
    assert analysis["quota_headroom"]["next"]["stage"] == "50"
    assert [e["kind"] for e in report["events"]] == ["forced_promotion"]
    assert report["events"][0]["detail"] == "first cohort, fresh database"


@pytest.fixture
def a_rollout(staff_user, django_capture_on_commit_callbacks, celery_eager):
    """shadow → 10 (evidence passed) → a breach and a rollback → a resume → a reconciliation."""
    from reconciliation.models import ReconciliationRun

    with django_capture_on_commit_callbacks(execute=True):
        analysis_passing(transports={
            "supabase": {"prober": {"p95_ms": 48.0, "error_rate": 0.0}},
            "websocket": {"prober": {"p95_ms": 40.0, "error_rate": 0.0}},
        })  # fmt: skip
        services.rollout_stage_set(stage="10", actor=staff_user, reason="first cohort")
    samples_add(transport="supabase", kind="delivery", values=[0.0] * 30)
    services.rollout_health_evaluate()
    services.rollout_resume(actor=staff_user, reason="fixed upstream")
    ReconciliationRun.objects.create(
        trigger="hourly", status="clean", started_at=timezone.now(), events_judged=37
    )


def test_the_report_lists_stages_breaches_rollbacks_resumes_and_reconciliation(a_rollout):
    report = json.loads(run("report", "--json"))
    assert [run_["stage"] for run_ in report["stages"]] == ["shadow", "10"]
    shadow = report["stages"][0]
    # the pass recorded while it ran, then the final one over its real samples (none here)
    assert [a["verdict"] for a in shadow["analyses"]] == ["pass", "inconclusive"]
    assert shadow["analyses"][-1]["final"] is True
    assert report["stages"][1]["started_by"] == "grace"
    kinds = [event["kind"] for event in report["events"]]
    for kind in ("rollback", "breach", "resume", "reconciliation"):
        assert kind in kinds, kinds
    assert kinds.index("rollback") < kinds.index("resume")
    rollback = next(e for e in report["events"] if e["kind"] == "rollback")
    assert rollback["detail"].startswith("automatic rollback: Supabase error rate")
    assert report["series"]["supabase"][0]["p95_ms"] == 48.0
    text = run("report")
    assert ": pass; p95 supabase 48.0 ms" in text and "verdict inconclusive" in text
    assert "rollback" in text and "fixed upstream" in text


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


def test_the_report_page_shows_the_timeline_charts_and_export_links(staff_client, a_rollout):
    body = staff_client.get(REPORT).content.decode()
    assert 'data-testid="report-run-shadow"' in body and 'data-testid="report-run-10"' in body
    assert "<svg" in body and "p95 latency (prober) at each analysis" in body
    assert "automatic rollback" in body and "fixed upstream" in body
    for fmt in ("print", "json", "csv"):
        assert f'href="?format={fmt}"' in body
    printed = staff_client.get(REPORT, {"format": "print"})
    assert printed.status_code == 200
    assert b"@media print" not in printed.content  # the stylesheet carries it
    assert b'id="nav-sidebar"' not in printed.content  # no admin chrome
    assert b"Stage 10 (10 %)" in printed.content


def test_the_report_exports_json_and_csv(staff_client, a_rollout):
    exported = staff_client.get(REPORT, {"format": "json"})
    assert exported["Content-Disposition"].startswith('attachment; filename="rollout-report-')
    assert [r["stage"] for r in exported.json()["stages"]] == ["shadow", "10"]
    as_csv = staff_client.get(REPORT, {"format": "csv"})
    assert as_csv["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.content.decode())))
    kinds = [row["kind"] for row in rows]
    assert "stage" in kinds and "analysis" in kinds and "rollback" in kinds
    assert [row["at"] for row in rows] == sorted(row["at"] for row in rows)
    analysis = next(row for row in rows if row["kind"] == "analysis")
    assert analysis["verdict"] == "pass" and analysis["supabase_p95_ms"] == "48.0"


def test_a_spreadsheet_formula_in_a_reason_is_exported_as_text(staff_user, staff_client):
    analysis_passing()
    services.rollout_stage_set(stage="10", actor=staff_user, reason='=HYPERLINK("x")')
    rows = list(csv.DictReader(io.StringIO(staff_client.get(REPORT, {"format": "csv"}).content
                                           .decode())))  # fmt: skip
    assert any(row["detail"] == '\'=HYPERLINK("x")' for row in rows)


def test_the_report_is_for_staff_and_refuses_an_unknown_format(client, user, staff_client):
    assert staff_client.get(REPORT, {"format": "xml"}).status_code == 400
    assert staff_client.get(REPORT, {"format": "xml"}).json()["error"]["field"] == "format"
    client.logout()
    client.force_login(user)
    assert client.get(REPORT).status_code == 403
    assert client.get(REPORT, {"format": "json"}).status_code == 403


def test_the_report_reads_only(staff_client, a_rollout):
    before = StageAnalysis.objects.count()
    staff_client.get(REPORT)
    run("report", "--json")
    assert StageAnalysis.objects.count() == before  # the provisional analysis is not saved
